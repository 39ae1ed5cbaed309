"""Every write is checked against the shard's current epoch inside the shard's turn.

Raw unsequenced (sequence 0) batches of epoch 1 keep arriving while epoch 2 opens the shard.
Each puts its own id into one key. The key is read as soon as the open returns, and again once
every sender stopped: no epoch-1 batch may land in between (DESIGN.md invariant 5).
"""
from __future__ import annotations

import threading

import grpc
import pytest

from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import keys_in_key_groups, read_request, read_values, shard_ref, write_request

KEY = keys_in_key_groups(1, 128, 0, 127)[0].encode()
STATES = [pb.StateDescriptor(name="v", kind=pb.STATE_KIND_VALUE)]
SENDERS = 4
PUTS_PER_BATCH = 50_000  # decoding takes a while: the old epoch check ran before it, outside the turn


def _send_old_batches(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef, sender: int,
                      stop: threading.Event) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        value = b"old-%d-%d" % (sender, number)
        request = write_request(ref, "v", [WriteOp.PUT] * PUTS_PER_BATCH, [KEY] * PUTS_PER_BATCH,
                                [value] * PUTS_PER_BATCH)
        try:
            stub.WriteBatch(request, timeout=30)
        except grpc.RpcError:
            pass  # fenced: expected once epoch 2 opened


@pytest.mark.timeout(120)
@pytest.mark.parametrize("trial", range(6))
def test_fenced_unsequenced_writes_never_land_after_a_newer_epoch_opened(
        stub: state_pb2_grpc.StateServiceStub, namespace: str, trial: int) -> None:
    """Old code: the epoch was checked before the batch was decoded and never under the shard's
    lock for sequence 0, so epoch-1 batches landed after epoch 2 opened (8-12 times in 16 trials;
    here 2 of 5 trials failed on the old code, so 6 trials catch it nearly always)."""
    old = shard_ref(namespace, (0, 127), 1)
    stub.OpenShard(pb.OpenShardRequest(shard=old, states=STATES), timeout=10)
    stop = threading.Event()
    senders = [threading.Thread(target=_send_old_batches, args=(stub, old, n, stop)) for n in range(SENDERS)]
    for sender in senders:
        sender.start()
    try:
        # Let old batches queue up on the shard, then open at epoch 2 and write the marker at once.
        stub.WriteBatch(write_request(old, "v", [WriteOp.PUT], [KEY], [b"start"]), timeout=30)
        new = shard_ref(namespace, (0, 127), 2)
        stub.OpenShard(pb.OpenShardRequest(shard=new, states=STATES, restore=pb.RestoreSource(empty=True)), timeout=30)
        at_open = read_values(stub, read_request(new, "v", ReadOp.GET, [KEY]))[0]
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    stored = read_values(stub, read_request(new, "v", ReadOp.GET, [KEY]))[0]
    assert stored == at_open, f"a batch of fenced epoch 1 ({stored!r}) landed after epoch 2 opened"

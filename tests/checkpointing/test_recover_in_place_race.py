"""A recovery keeps a shard open in place only if it is still exactly the checkpoint, against a
real node: raw batches of the older epoch race the recover's open (started a few milliseconds
apart, trial by trial). Whichever way each trial goes (the shard kept, or rebuilt because an old
batch landed first), the shard serves exactly the checkpoint from the open on, and no old batch
lands after it: the in-place check and the epoch change happen under the shard's write lock,
which every batch takes its turn under (DESIGN.md invariants 8 and 11).

A guard for the kept path (node.shard_open._keep_in_place); the code before it always rebuilt
the shard, so it passes there too.
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from stateserver.client import BYTES, CheckpointCoordinator, KeyedStateBackend, StateClient
from stateserver.protocol.operations import WriteOp
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import NodeProcess, namespace_on_one_worker, shard_ref, write_request

KEY = b"the-key"
SENDERS = 3


def _send_old_batches(stub: state_pb2_grpc.StateServiceStub, namespace: str, epoch: int, start: threading.Event,
                      stop: threading.Event, sender: int) -> None:
    start.wait()
    number = 0
    while not stop.is_set():
        number += 1
        request = write_request(shard_ref(namespace, (0, 127), epoch), "v", [WriteOp.PUT], [KEY],
                                [b"old-%d-%d" % (sender, number)])
        try:
            stub.WriteBatch(request, timeout=10)
        except grpc.RpcError:
            pass  # fenced once the recover opened the shard


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay_ms", [0, 5, 10, 20, 40])
def test_old_batches_racing_a_recover_never_show_in_the_recovered_shard(
        client: StateClient, node: NodeProcess, request: pytest.FixtureRequest, delay_ms: int) -> None:
    namespace = namespace_on_one_worker(node, request.node.name, [(0, 127)])
    client.create_namespace(namespace, max_key_groups=128)
    coordinator = CheckpointCoordinator(client, namespace)
    subtask = KeyedStateBackend(client, namespace, key_groups="0-127")
    coordinator.recover([subtask])
    old_epoch = subtask.epoch
    state = subtask.writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
    state.put(KEY, b"checkpointed")
    checkpoint_id = coordinator.checkpoint([subtask])
    stub = node.shard_stub(namespace, (0, 127))
    start, stop = threading.Event(), threading.Event()
    senders = [threading.Thread(target=_send_old_batches, args=(stub, namespace, old_epoch, start, stop, n))
               for n in range(SENDERS)]
    for sender in senders:
        sender.start()
    starter = threading.Timer(delay_ms / 1000, start.set)
    starter.start()
    try:
        recovery = coordinator.recover([subtask])
        at_open = state.get(KEY)
        time.sleep(0.05)  # old batches go on arriving: every one of them must be refused
    finally:
        start.set()
        stop.set()
        starter.cancel()
        for sender in senders:
            sender.join()
    assert recovery.checkpoint_id == checkpoint_id
    assert at_open == b"checkpointed"
    assert state.get(KEY) == b"checkpointed"

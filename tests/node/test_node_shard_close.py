"""Closing and reopening a shard while requests on it are in flight, against a real node process.

A shard's RocksDB is closed only after the requests using it have returned (a lease per request,
as Flink's ``ResourceGuard``); requests that come after the close get a clear, retriable status.
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from stateserver.protocol import wire
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import NodeProcess, keys_in_key_groups, read_request, rpc_error_reason, shard_ref, write_request
from support.routing_stub import checkpoint_stub
from support.waiting import wait_until

STATES = [pb.StateDescriptor(name="v", kind=pb.STATE_KIND_VALUE), pb.StateDescriptor(name="l", kind=pb.STATE_KIND_LIST)]
LIST_LENGTH = 30_000
KEYS = [k.encode() for k in keys_in_key_groups(200, 128, 0, 127)]
# What a request may get while its shard closes and reopens: its answer, or "try again".
RETRIABLE = {(grpc.StatusCode.UNAVAILABLE, "shard-closed"), (grpc.StatusCode.FAILED_PRECONDITION, "shard-not-open")}


def open_shard(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    stub.OpenShard(pb.OpenShardRequest(shard=ref, states=STATES), timeout=20)


def value_of(key: bytes) -> bytes:
    return b"value-of-" + key * 20


@pytest.fixture
def ref(stub: state_pb2_grpc.StateServiceStub, namespace: str) -> pb.ShardRef:
    shard = shard_ref(namespace, (0, 127), 1)
    open_shard(stub, shard)
    stub.WriteBatch(write_request(shard, "v", [WriteOp.PUT] * len(KEYS), KEYS, [value_of(k) for k in KEYS]), timeout=10)
    # A long list: reading it takes a while, so reads are often in flight when the shard closes.
    stub.WriteBatch(write_request(shard, "l", [WriteOp.LIST_APPEND] * LIST_LENGTH, [KEYS[0]] * LIST_LENGTH,
                                  [b"e"] * LIST_LENGTH), timeout=10)
    return shard


def commit_checkpoint(node: NodeProcess, ref: pb.ShardRef, checkpoint_id: int) -> None:
    checkpoints = checkpoint_stub(node)
    checkpoints.SnapshotShard(cpb.SnapshotShardRequest(shard=ref, checkpoint_id=checkpoint_id), timeout=10)
    done = checkpoints.AwaitShardSnapshot(cpb.AwaitShardSnapshotRequest(shard=ref, checkpoint_id=checkpoint_id,
                                                                        timeout_millis=10_000), timeout=15)
    assert done.state == cpb.SNAPSHOT_STATE_DURABLE, done.error
    checkpoints.CommitCheckpoint(cpb.CommitCheckpointRequest(namespace=ref.namespace, checkpoint_id=checkpoint_id,
                                                             shards=[done.handle], writers=[ref]), timeout=10)


@pytest.mark.timeout(60)
def test_reads_in_flight_while_the_shard_closes_and_reopens_in_a_loop(node: NodeProcess,
                                                                     stub: state_pb2_grpc.StateServiceStub,
                                                                     ref: pb.ShardRef) -> None:
    """Readers in three threads while the shard is closed and reopened 20 times: by CloseShard
    and OpenShard, and by OpenShard restoring the latest checkpoint at a newer epoch.

    Fails on the code before the shard leases: a read holding a column family while the shard
    closed kept RocksDB's lock, so the reopen failed with INTERNAL "lock hold by current process"
    (and the read was answered from the closed database).
    """
    commit_checkpoint(node, ref, 1)  # the values and the list, as they stay
    current = pb.ShardRef()
    current.CopyFrom(ref)
    opening = [ref.epoch]  # the newest epoch asked for: reads of older ones may be fenced
    stop = threading.Event()
    unexpected: list[str] = []
    answered = [0, 0]  # reads answered with values, reads told to retry

    def read_loop() -> None:
        while not stop.is_set():
            epoch = current.epoch
            reading = shard_ref(ref.namespace, (0, 127), epoch)
            try:
                reply = stub.ReadBatch(read_request(reading, "v", ReadOp.GET, KEYS), timeout=10)
                listed = stub.ReadBatch(read_request(reading, "l", ReadOp.GET_LIST, KEYS[:1]), timeout=10)
            except grpc.RpcError as exc:
                outcome = (exc.code(), rpc_error_reason(exc))  # type: ignore[attr-defined]
                stale = outcome[1] == "fenced" and opening[0] > epoch  # a newer epoch opened meanwhile
                if outcome not in RETRIABLE and not stale:
                    unexpected.append(f"{outcome}: {exc.details()}")  # type: ignore[attr-defined]
                answered[1] += 1
                continue
            if reply.found != b"\x01" * len(KEYS) or wire.unpack_list(listed.values) != [b"e"] * LIST_LENGTH:
                unexpected.append(f"wrong answer: found {reply.found!r}, list of {len(listed.values)} bytes")
            elif reply.values != b"".join(value_of(k) for k in KEYS):
                unexpected.append("wrong values")
            answered[0] += 1

    readers = [threading.Thread(target=read_loop) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for i in range(20):
            time.sleep(0.01)
            if i % 2:
                stub.CloseShard(pb.CloseShardRequest(shard=current), timeout=20)
                open_shard(stub, current)
            else:  # the old shard closes and the restored one opens within one request
                newer = shard_ref(ref.namespace, (0, 127), current.epoch + 1)
                opening[0] = newer.epoch
                stub.OpenShard(pb.OpenShardRequest(shard=newer, states=STATES,
                                                   restore=pb.RestoreSource(latest=True)), timeout=20)
                current.epoch = newer.epoch
    finally:
        stop.set()
        for reader in readers:
            reader.join(20)
    assert not unexpected, unexpected[:5]
    assert answered[0] > 0 and answered[1] > 0, answered


@pytest.mark.timeout(30)
def test_requests_while_the_shard_closes_and_reopens_hear_shard_closed(node: NodeProcess,
                                                                      stub: state_pb2_grpc.StateServiceStub,
                                                                      ref: pb.ShardRef) -> None:
    """Requests arriving while the shard is closed and restored for a newer writer are told it is
    closing (UNAVAILABLE, retriable, naming the shard); once it is back they are answered.

    The test failed once in the 2-worker CI pass after shards unchanged since the checkpoint
    began to be kept in place on a reopen: its reopens then never closed the shard. Each reopen
    now follows a write, so it restores, which is what this test is about.

    Fails on the code before the shard leases: they got FAILED_PRECONDITION "shard-not-open",
    which the client does not retry, with no word of the close.
    """
    commit_checkpoint(node, ref, 1)

    def reopen_under_reads(epoch: int) -> list[tuple[grpc.StatusCode, str, str]]:
        # A write by the current owner first: the shard is then no longer exactly the checkpoint,
        # so the newer open closes it and restores (a shard unchanged since the checkpoint would
        # be kept open in place, never closed).
        owner = shard_ref(ref.namespace, (0, 127), epoch - 1)
        stub.WriteBatch(write_request(owner, "v", [WriteOp.PUT], KEYS[:1], [b"since the checkpoint"]), timeout=10)
        newer = shard_ref(ref.namespace, (0, 127), epoch)
        stop = threading.Event()
        outcomes: list[tuple[grpc.StatusCode, str, str]] = []

        def read_loop() -> None:
            while not stop.is_set():
                try:
                    stub.ReadBatch(read_request(newer, "v", ReadOp.GET, KEYS[:1]), timeout=10)
                    outcomes.append((grpc.StatusCode.OK, "", ""))
                except grpc.RpcError as exc:
                    outcomes.append((exc.code(), rpc_error_reason(exc), exc.details()))  # type: ignore[attr-defined]

        reader = threading.Thread(target=read_loop)
        reader.start()
        try:
            time.sleep(0.05)
            stub.OpenShard(pb.OpenShardRequest(shard=newer, states=STATES, restore=pb.RestoreSource(latest=True)),
                           timeout=20)
            # A read answered since the open returned (not a fixed sleep: on a busy machine the
            # reader may get no turn in 50 ms, and the last outcome would be one from before).
            opened = len(outcomes)
            wait_until(lambda: (grpc.StatusCode.OK, "", "") in outcomes[opened:], 10, "a read after the open")
        finally:
            stop.set()
            reader.join(20)
        return outcomes

    # The shard is closed only from the take-over to the newer open (milliseconds, now that a
    # restore can come from the node's local copy): reopen at newer epochs until a read lands in
    # that window. Every outcome of every attempt must be one of the three below.
    for epoch in range(2, 12):
        outcomes = reopen_under_reads(epoch)
        kinds = [(code, reason) for code, reason, _ in outcomes]
        # Before the open: not open at this epoch yet; during it: closing; after it: answered.
        assert set(kinds) <= {(grpc.StatusCode.FAILED_PRECONDITION, "shard-not-open"),
                              (grpc.StatusCode.UNAVAILABLE, "shard-closed"), (grpc.StatusCode.OK, "")}, set(kinds)
        assert kinds[-1] == (grpc.StatusCode.OK, "")
        if (grpc.StatusCode.UNAVAILABLE, "shard-closed") in kinds:
            break
    assert (grpc.StatusCode.UNAVAILABLE, "shard-closed") in kinds
    details = next(d for code, _, d in outcomes if code is grpc.StatusCode.UNAVAILABLE)
    assert f"{ref.namespace}/0-127" in details and "retry" in details, details
    newest = shard_ref(ref.namespace, (0, 127), epoch)
    assert stub.ReadBatch(read_request(newest, "v", ReadOp.GET, KEYS[:1]), timeout=10).values == value_of(KEYS[0])

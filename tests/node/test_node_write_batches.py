"""Sequenced write batches on the wire: the node applies a writer's batches in sequence order.

A batch whose predecessor has not arrived is refused at once (out of order) and resent by the
writer; a batch that fails otherwise fails its writer session (DESIGN.md invariant 9).
"""
from __future__ import annotations

import time

import grpc
import pytest

from stateserver.protocol import wire
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from grpc_health.v1 import health_pb2
from support.node import (
    NodeProcess, keys_in_key_groups, read_request, read_values, rpc_error_reason, shard_ref, write_request,
)
from support.routing_stub import checkpoint_stub

KEY = keys_in_key_groups(1, 128, 0, 127)[0].encode()
STATES = [pb.StateDescriptor(name="v", kind=pb.STATE_KIND_VALUE), pb.StateDescriptor(name="l", kind=pb.STATE_KIND_LIST)]


@pytest.fixture
def ref(stub: state_pb2_grpc.StateServiceStub, namespace: str) -> pb.ShardRef:
    shard = shard_ref(namespace, (0, 127), 1)
    stub.OpenShard(pb.OpenShardRequest(shard=shard, states=STATES), timeout=10)
    return shard


def put(ref: pb.ShardRef, value: bytes, sequence: int) -> pb.WriteBatchRequest:
    return write_request(ref, "v", [WriteOp.PUT], [KEY], [value], sequence=sequence)


def append(ref: pb.ShardRef, value: bytes, sequence: int) -> pb.WriteBatchRequest:
    return write_request(ref, "l", [WriteOp.LIST_APPEND], [KEY], [value], sequence=sequence)


def value_of(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> bytes | None:
    return read_values(stub, read_request(ref, "v", ReadOp.GET, [KEY]))[0]


def list_of(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> list[bytes]:
    found = read_values(stub, read_request(ref, "l", ReadOp.GET_LIST, [KEY]))[0]
    return wire.unpack_list(found) if found is not None else []


def test_a_batch_that_overtook_its_predecessor_is_refused_and_applies_when_resent(
        stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    """Batch 2 before batch 1 is answered at once with ABORTED (out-of-order) and changes nothing;
    resent after batch 1 it applies. (Old code: batch 2 parked a thread until batch 1 came.)"""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(append(ref, b"2", 2), timeout=10)
    assert time.monotonic() - started < 5
    assert error.value.code() == grpc.StatusCode.ABORTED
    assert rpc_error_reason(error.value) == "out-of-order"
    assert list_of(stub, ref) == []
    stub.WriteBatch(append(ref, b"1", 1), timeout=10)
    stub.WriteBatch(append(ref, b"2", 2), timeout=10)  # an out-of-order batch did not fail the session
    assert list_of(stub, ref) == [b"1", b"2"]


@pytest.mark.timeout(60)
def test_batches_after_a_gap_are_answered_at_once(node: NodeProcess, stub: state_pb2_grpc.StateServiceStub,
                                                  ref: pb.ShardRef) -> None:
    """16 batches whose predecessor never comes are refused at once, and the node stays responsive.
    (Old code: each held a worker thread for 30 s and the health check waited 29 s.)"""
    started = time.monotonic()
    gapped = [stub.WriteBatch.future(append(ref, b"%d" % n, n), timeout=20) for n in range(3, 19)]
    health_started = time.monotonic()
    assert node.health_status(timeout=5) == health_pb2.HealthCheckResponse.SERVING
    assert time.monotonic() - health_started < 2, "the health check waited behind parked batches"
    for future in gapped:
        with pytest.raises(grpc.RpcError) as error:
            future.result()
        assert error.value.code() == grpc.StatusCode.ABORTED, error.value.details()
        assert rpc_error_reason(error.value) == "out-of-order"
    assert time.monotonic() - started < 5, "batches after a gap were not answered at once"
    assert list_of(stub, ref) == []
    stub.WriteBatch(append(ref, b"1", 1), timeout=10)  # the session goes on
    assert list_of(stub, ref) == [b"1"]


def test_a_batch_applied_before_is_refused(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    stub.WriteBatch(put(ref, b"one", 1), timeout=10)
    stub.WriteBatch(put(ref, b"two", 2), timeout=10)
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(put(ref, b"replayed", 1), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "applied before" in error.value.details()
    assert value_of(stub, ref) == b"two"


def assert_session_failed(stub: state_pb2_grpc.StateServiceStub, request: pb.WriteBatchRequest) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(request, timeout=10)
    assert time.monotonic() - started < 5
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    assert rpc_error_reason(error.value) == "session-failed"
    assert "batch 2 failed" in error.value.details() and "reopen" in error.value.details()


def test_a_failed_batch_fails_the_session(node: NodeProcess, stub: state_pb2_grpc.StateServiceStub,
                                          ref: pb.ShardRef) -> None:
    """Batch 1 applies, batch 2 fails on the node, batch 3 (and any later write, sequence 0 too) is
    refused: the shard holds batch 1 only. (Old code: batch 3 applied, so the state was not a prefix
    of the writer's writes.)"""
    stub.WriteBatch(put(ref, b"one", 1), timeout=10)
    bad = write_request(ref, "v", [WriteOp.MERGE], [KEY], [b"x"], sequence=2)  # MERGE on a value state
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(bad, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_session_failed(stub, put(ref, b"three", 3))
    assert_session_failed(stub, put(ref, b"four", 4))
    assert_session_failed(stub, put(ref, b"unsequenced", 0))
    assert value_of(stub, ref) == b"one"
    # Nor can a checkpoint be taken of it: it would hold batch 1 without batch 2.
    with pytest.raises(grpc.RpcError) as snapshot:
        checkpoint_stub(node).SnapshotShard(
            cpb.SnapshotShardRequest(shard=ref, checkpoint_id=1), timeout=10)
    assert rpc_error_reason(snapshot.value) == "session-failed"
    # Resuming the session is refused too: only a reopen from a checkpoint (or empty) clears it.
    with pytest.raises(grpc.RpcError) as reopen:
        stub.OpenShard(pb.OpenShardRequest(shard=ref), timeout=10)
    assert reopen.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rpc_error_reason(reopen.value) == "restore-required"
    assert_session_failed(stub, put(ref, b"one", 1))
    assert value_of(stub, ref) == b"one"


@pytest.mark.timeout(60)
def test_a_malformed_batch_fails_the_session(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    """A batch refused while decoding fails the session as well, and uses its turn: batch 3 is
    answered at once. (Old code: batch 3 applied.)"""
    stub.WriteBatch(put(ref, b"one", 1), timeout=10)
    bad = put(ref, b"two", 2)
    bad.key_lengths[0] += 1  # lengths that do not add up: refused while decoding
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(bad, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_session_failed(stub, put(ref, b"three", 3))
    assert value_of(stub, ref) == b"one"


def test_reopening_the_shard_numbers_batches_afresh(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    stub.WriteBatch(put(ref, b"one", 1), timeout=10)
    stub.WriteBatch(put(ref, b"two", 2), timeout=10)
    stub.OpenShard(pb.OpenShardRequest(shard=ref), timeout=10)
    stub.WriteBatch(put(ref, b"again", 1), timeout=10)
    assert value_of(stub, ref) == b"again"


def test_unsequenced_batches_apply_on_arrival(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    stub.WriteBatch(put(ref, b"a", 0), timeout=10)
    stub.WriteBatch(put(ref, b"b", 0), timeout=10)
    assert value_of(stub, ref) == b"b"

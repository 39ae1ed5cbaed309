"""Sequenced write batches on the wire: the node applies a writer's batches in sequence order."""
from __future__ import annotations

import time

import grpc
import pytest

from stateserver import wire
from stateserver.operations import ReadOp, WriteOp
from stateserver.v1 import state_pb2 as pb
from stateserver.v1 import state_pb2_grpc
from support.node import keys_in_key_groups, read_request, read_values, shard_ref, write_request

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


@pytest.mark.timeout(60)
def test_batches_that_arrive_out_of_order_apply_in_sequence_order(stub: state_pb2_grpc.StateServiceStub,
                                                                  ref: pb.ShardRef) -> None:
    # Batches 4, 3 and 2 arrive first and must wait for batch 1.
    later = [stub.WriteBatch.future(append(ref, b"%d" % n, n), timeout=20) for n in (4, 3, 2)]
    time.sleep(0.3)
    assert not any(f.done() for f in later), "a batch applied before the batches numbered before it"
    assert list_of(stub, ref) == []
    stub.WriteBatch(append(ref, b"1", 1), timeout=20)
    for future in later:
        assert future.result().applied == 1
    assert list_of(stub, ref) == [b"1", b"2", b"3", b"4"]

    last = stub.WriteBatch.future(put(ref, b"six", 6), timeout=20)
    time.sleep(0.1)
    stub.WriteBatch(put(ref, b"five", 5), timeout=20)
    last.result()
    assert value_of(stub, ref) == b"six"


def test_a_batch_applied_before_is_refused(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    stub.WriteBatch(put(ref, b"one", 1), timeout=10)
    stub.WriteBatch(put(ref, b"two", 2), timeout=10)
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(put(ref, b"replayed", 1), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "applied before" in error.value.details()
    assert value_of(stub, ref) == b"two"


def test_a_failed_batch_uses_its_turn(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    stub.WriteBatch(put(ref, b"one", 1), timeout=10)
    bad = write_request(ref, "v", [WriteOp.MERGE], [KEY], [b"x"], sequence=2)  # MERGE on a value state
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(bad, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    started = time.monotonic()
    stub.WriteBatch(put(ref, b"three", 3), timeout=10)
    assert time.monotonic() - started < 5  # batch 3 did not wait for batch 2
    assert value_of(stub, ref) == b"three"


@pytest.mark.timeout(60)
def test_a_malformed_batch_uses_its_turn(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    stub.WriteBatch(put(ref, b"one", 1), timeout=10)
    bad = put(ref, b"two", 2)
    bad.key_lengths[0] += 1  # lengths that do not add up: refused while decoding
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteBatch(bad, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    started = time.monotonic()
    stub.WriteBatch(put(ref, b"three", 3), timeout=40)
    assert time.monotonic() - started < 5, "batch 3 waited for the malformed batch 2"
    assert value_of(stub, ref) == b"three"


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

"""A writer's session fails as a whole (DESIGN.md invariant 9), and batches fit what the node accepts.

A batch the node refuses is made here by writing, through the writer's own shard session, to a
state the node does not know: refused on the node (NOT_FOUND), not by the client's checks.
"""
from __future__ import annotations

import time

import pytest

from stateserver.client import KeyedStateBackend, first_checkpoint_id
from stateserver.client import (
    BYTES, InvalidArgumentError, NotFoundError, SessionFailedError, StateClient, StateServerError, Writer,
)
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import read_request, read_values, shard_ref

KIB, MIB = 1 << 10, 1 << 20


def fail_a_batch(writer: Writer) -> None:
    writer.sessions[0].add(WriteOp.PUT, "never-declared", b"k", b"v")


def test_after_a_failed_batch_every_call_fails_and_no_checkpoint_holds_later_writes(
        client: StateClient, namespace: str, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    """Old code: the writer went on after the failed flush, batch 3 applied and checkpoint 2
    committed 1 + 100 without the merge of batch 2: state that is not a prefix of the writes."""
    writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
    counts = writer.aggregating_state("counts", merge_operator="sum_int64")
    counts.merge("a", 1)
    writer.snapshot(1)  # batch 1, then checkpoint 1
    client.commit_checkpoint(namespace, 1, writer.await_snapshot(1), writers=[writer])

    counts.merge("a", 10)  # a valid merge, in the batch that fails
    fail_a_batch(writer)
    with pytest.raises(NotFoundError):
        writer.flush()
    calls = {
        "merge": lambda: counts.merge("a", 100),
        "get": lambda: counts.get("a"),
        "flush": writer.flush,
        "snapshot": lambda: writer.snapshot(2),
        "await_snapshot": lambda: writer.await_snapshot(2),
        "new state handle": lambda: writer.value_state("other"),
        "close": writer.close,
    }
    for name, call in calls.items():
        with pytest.raises(SessionFailedError) as error:
            call()
        assert isinstance(error.value.__cause__, NotFoundError), name
        assert "reopen the writer" in str(error.value).lower()
    ref = writer.sessions[0].ref
    assert read_values(node_stub, read_request(ref, "counts", ReadOp.GET, [b"a"])) == [(1).to_bytes(8, "little")]

    reopened = client.open_writer(namespace, key_groups="0-127", epoch=2, restore=1)
    reopened_counts = reopened.aggregating_state("counts", merge_operator="sum_int64")
    assert reopened_counts.get("a") == 1
    reopened_counts.merge("a", 10)
    assert reopened_counts.get("a") == 11


def test_writes_buffered_for_other_shards_are_not_sent_after_a_failure(
        client: StateClient, namespace: str, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    """Old code: the other shard's buffered write was sent and applied by the next flush."""
    writer = client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=1)
    values = writer.value_state("v", value_serializer=BYTES)
    low, high = writer.sessions
    other_key = next(f"k{i}" for i in range(1000) if writer.session_for(f"k{i}".encode()) is high)
    values.put(other_key, b"buffered before the failure")
    low.add(WriteOp.PUT, "never-declared", b"k", b"v")
    with pytest.raises(NotFoundError):
        low.flush()
    with pytest.raises(SessionFailedError):
        writer.flush()
    ref = shard_ref(namespace, (64, 127), 1)
    assert read_values(node_stub, read_request(ref, "v", ReadOp.GET, [other_key.encode()])) == [None]


@pytest.mark.timeout(120)
def test_put_many_of_large_values_is_split_below_the_message_size(writer: Writer) -> None:
    """1,000 values of 70 KiB (70 MiB, over the 64 MiB message limit) in one put_many. Old code:
    one 70 MiB batch, a retriable UnavailableError and a 30 s stall per flush, the writes lost."""
    blobs = writer.value_state("blobs", value_serializer=BYTES)
    items = {f"k{i}": bytes([i % 251]) * (70 * KIB) for i in range(1000)}
    started = time.monotonic()
    blobs.put_many(items)
    writer.flush()
    assert time.monotonic() - started < 30
    keys = list(items)
    assert blobs.get_many(keys[:10] + keys[-10:]) == [items[k] for k in keys[:10] + keys[-10:]]


def test_an_oversized_value_is_refused_at_the_call_and_changes_nothing(
        writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    """A 17 MiB value (the node's limit is 16 MiB). Old code: buffered and sent, the batch refused by
    the node at the next flush, its other writes lost."""
    values = writer.value_state("v", value_serializer=BYTES)
    values.put("before", b"1")
    with pytest.raises(InvalidArgumentError, match="exceeds the node's limit of 16777216"):
        values.put("big", b"x" * (17 * MIB))
    with pytest.raises(InvalidArgumentError):  # in a put_many, nothing of it is buffered
        values.put_many({"small": b"2", "big": b"x" * (17 * MIB)})
    with pytest.raises(InvalidArgumentError):
        writer.list_state("l", value_serializer=BYTES).add_all("k", [b"ok", b"x" * (17 * MIB)])
    assert len(writer.sessions[0].buffer) == 1  # only "before"
    writer.flush()
    ref = writer.sessions[0].ref
    assert read_values(node_stub, read_request(ref, "v", ReadOp.GET, [b"before", b"big", b"small"])) == [b"1", None, None]


def test_the_client_learns_the_limits_from_the_node(writer: Writer) -> None:
    limits = writer.sessions[0].node_limits
    assert (limits.max_key_bytes, limits.max_value_bytes, limits.max_batch_ops) == (64 * KIB, 16 * MIB, 100_000)
    assert limits.max_message_bytes == 64 * MIB
    assert writer.sessions[0].limits.max_bytes <= limits.max_request_bytes


def test_client_errors_are_state_server_errors(client: StateClient, namespace: str) -> None:
    """Old code: plain ValueErrors (and TypeError, struct.error from the serializers)."""
    writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
    failing = [
        lambda: writer.value_state("a/b"),
        lambda: writer.value_state(""),
        lambda: writer.aggregating_state("agg", merge_operator="no_such_operator"),
        lambda: writer.aggregating_state("agg", merge_operator="list_append", element_serializer=None),
        lambda: writer.value_state("v", ttl_ms=-1),
        lambda: client.open_writer(namespace, key_groups="0-9999x", epoch=2),
        lambda: client.open_writer(namespace, key_groups="0-127", epoch=2, restore="yesterday"),
        lambda: StateClient([]),
        lambda: writer.value_state("v").put("k", object()),
        lambda: writer.aggregating_state("sum", merge_operator="sum_int64").merge("k", 1 << 64),
        lambda: writer.value_state("s").put(3, "a key that is not a str"),
        lambda: first_checkpoint_id(0),
        lambda: KeyedStateBackend(client, namespace, key_groups="0-127", epoch=3).writer,
    ]
    for call in failing:
        with pytest.raises(StateServerError):
            call()
    writer.value_state("v").put("k", 1)
    writer.flush()  # none of it failed the writer

"""Value state through the client, against a real node: put, get, delete, get_many, put_many."""
from __future__ import annotations

import pytest

from stateserver.client import BYTES, JSON, StateClient, Writer
from stateserver.protocol.operations import ReadOp
from stateserver.protocol.v1 import state_pb2_grpc
from support.checkpoints import commit
from support.node import read_request, read_values, shard_ref


def stored(stub: state_pb2_grpc.StateServiceStub, writer: Writer, state: str, keys: list[str]) -> list[bytes | None]:
    """What the node has for ``keys``, read past the client (same shard, same epoch)."""
    ref = shard_ref(writer.namespace, (0, writer.max_key_groups - 1), writer.epoch)
    return read_values(stub, read_request(ref, state, ReadOp.GET, [k.encode() for k in keys]))


def test_put_get_delete_after_flush(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    users = writer.value_state("users")
    users.put("alice", {"age": 31, "tags": ["a", "b"]})
    users.put("bob", "just a string")
    users.put("carol", None)  # JSON null is a stored value, not an absent one
    writer.flush()

    assert stored(node_stub, writer, "users", ["alice", "bob", "carol", "dave"]) == [
        JSON.dumps({"age": 31, "tags": ["a", "b"]}), b'"just a string"', b"null", None,
    ]
    assert users.get("alice") == {"age": 31, "tags": ["a", "b"]}
    assert users.get("bob") == "just a string"
    assert users.get("carol", default="absent") is None
    assert users.get("dave") is None
    assert users.get("dave", default="absent") == "absent"

    users.put("alice", 7)  # overwrite
    users.delete("bob")
    writer.flush()
    assert users.get_many(["alice", "bob", "carol"], default=-1) == [7, -1, None]
    assert stored(node_stub, writer, "users", ["bob"]) == [None]


def test_put_many_and_get_many_span_several_batches(writer: Writer) -> None:
    counts = writer.value_state("counts")
    # 2,500 keys: more than one write batch (1,000 operations) and more than one read batch.
    counts.put_many({f"key-{i}": i for i in range(1500)})
    counts.put_many([(f"key-{i}", i) for i in range(1500, 2500)])
    writer.flush()

    keys = [f"key-{i}" for i in range(2500)] + ["missing-1", "missing-2"]
    assert counts.get_many(keys, default="none") == list(range(2500)) + ["none", "none"]
    # The order of the answer follows the order asked, not the order of shards or batches.
    assert counts.get_many(list(reversed(keys))) == [None, None] + list(range(2499, -1, -1))
    counts.put_many([])  # nothing to do, and no error
    assert counts.get_many([]) == []


def test_clear_of_a_value_removes_it(writer: Writer) -> None:
    flags = writer.value_state("flags")
    flags.put("x", True)
    flags.put("y", False)
    writer.flush()
    flags.clear("x")
    writer.flush()
    assert flags.get_many(["x", "y"]) == [None, False]


def test_states_are_separate(writer: Writer) -> None:
    first, second = writer.value_state("first"), writer.value_state("second")
    first.put("k", 1)
    second.put("k", 2)
    writer.flush()
    second.delete("k")
    writer.flush()
    assert (first.get("k"), second.get("k")) == (1, None)


def test_a_new_writer_at_a_higher_epoch_reads_what_an_earlier_writer_flushed(
    node_address: str, client: StateClient, namespace: str
) -> None:
    with client.open_writer(namespace, key_groups="0-127", epoch=1) as first:
        state = first.value_state("v")
        state.put_many({f"k{i}": {"i": i} for i in range(300)})
        state.delete("k7")
        commit(client, first, 1)
    # The with block closed the shard; a new process (a new client) takes over from checkpoint 1.
    with StateClient(node_address) as other_client:
        second = other_client.open_writer(namespace, key_groups="0-127", epoch=2, restore="latest")
        again = second.value_state("v")
        assert again.get_many([f"k{i}" for i in range(300)]) == [None if i == 7 else {"i": i} for i in range(300)]
        again.put("k1", "changed")
        second.flush()
        assert again.get("k1") == "changed"


def test_a_new_writer_takes_over_an_open_shard_and_sees_flushed_state(
    node_address: str, writer: Writer, namespace: str
) -> None:
    state = writer.value_state("v")
    state.put("flushed", 1)
    with StateClient(node_address) as coordinator:
        commit(coordinator, writer, 1)
    state.put("never-flushed", 2)  # still in the first writer's buffer when it is fenced
    with StateClient(node_address) as other_client:
        second = other_client.open_writer(namespace, key_groups="0-127", epoch=5, restore="latest")
        taken_over = second.value_state("v")
        assert taken_over.get_many(["flushed", "never-flushed"]) == [1, None]


@pytest.mark.timeout(120)
def test_values_too_large_for_one_reply_are_still_read(writer: Writer) -> None:
    # Five values of 15 MiB: each is allowed, but together they do not fit into one gRPC reply.
    blobs = writer.value_state("blobs", value_serializer=BYTES)
    values = {f"k{i}": bytes([65 + i]) * (15 << 20) for i in range(5)}
    for key, value in values.items():
        blobs.put(key, value)
    writer.flush()
    keys = ["missing", *values, "missing-too"]
    assert blobs.get_many(keys) == [None, *values.values(), None]

"""A writer reads its own buffered writes before any flush, combined with what the node has.

Each test also reads past the client, straight from the node, to prove the writes were still
buffered when the client answered (otherwise the test would pass by flushing).
"""
from __future__ import annotations

from stateserver.client import StateClient, Writer
from stateserver.protocol import wire
from stateserver.protocol.operations import ReadOp
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import read_request, read_values, shard_ref


class NodeView:
    """What the node stores for the writer's shard, read with the raw stub."""

    def __init__(self, stub: state_pb2_grpc.StateServiceStub, writer: Writer) -> None:
        self.stub = stub
        self.ref = shard_ref(writer.namespace, (0, writer.max_key_groups - 1), writer.epoch)

    def get(self, state: str, key: str) -> bytes | None:
        return read_values(self.stub, read_request(self.ref, state, ReadOp.GET, [key.encode()]))[0]

    def list(self, state: str, key: str) -> list[bytes]:
        found = read_values(self.stub, read_request(self.ref, state, ReadOp.GET_LIST, [key.encode()]))[0]
        return wire.unpack_list(found) if found is not None else []

    def map_get(self, state: str, key: str, map_key: str) -> bytes | None:
        request = read_request(self.ref, state, ReadOp.MAP_GET, [key.encode()], [map_key.encode()])
        return read_values(self.stub, request)[0]


def test_value_put_delete_put_before_flush(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    node = NodeView(node_stub, writer)
    state = writer.value_state("v")
    state.put("a", 1)
    assert state.get("a") == 1
    state.delete("a")
    assert state.get("a") is None
    assert state.get("a", default="gone") == "gone"
    state.put("a", 2)
    state.put("b", [1, 2])
    assert state.get_many(["a", "b", "c"]) == [2, [1, 2], None]
    assert node.get("v", "a") is None  # still buffered
    writer.flush()
    assert node.get("v", "a") == b"2"
    assert state.get_many(["a", "b", "c"]) == [2, [1, 2], None]


def test_value_delete_of_a_flushed_value_shows_before_flush(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    node = NodeView(node_stub, writer)
    state = writer.value_state("v")
    state.put_many({"a": 1, "b": 2})
    writer.flush()
    state.delete("a")
    state.put("b", 3)
    state.clear("b")
    state.put("c", 4)
    assert state.get_many(["a", "b", "c"]) == [None, None, 4]
    assert (node.get("v", "a"), node.get("v", "b"), node.get("v", "c")) == (b"1", b"2", None)
    writer.flush()
    assert state.get_many(["a", "b", "c"]) == [None, None, 4]


def test_list_appends_combine_with_the_stored_list(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    node = NodeView(node_stub, writer)
    events = writer.list_state("events")
    events.add_all("k", [1, 2])
    assert events.get("k") == [1, 2]
    writer.flush()
    events.add("k", 3)
    events.add_all("k", [4, 5])
    assert events.get("k") == [1, 2, 3, 4, 5]  # the node's [1, 2] plus the buffered appends
    assert node.list("events", "k") == [b"1", b"2"]
    writer.flush()
    assert events.get("k") == [1, 2, 3, 4, 5]


def test_list_clear_then_append_and_update_before_flush(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    node = NodeView(node_stub, writer)
    events = writer.list_state("events")
    events.add_all("cleared", [1, 2])
    events.add_all("updated", [1, 2])
    events.add_all("emptied", [1, 2])
    writer.flush()
    events.clear("cleared")
    events.add("cleared", 3)
    events.update("updated", [7, 8])
    events.clear("emptied")
    assert events.get("cleared") == [3]
    assert events.get("updated") == [7, 8]
    assert events.get("emptied") == []
    assert node.list("events", "cleared") == [b"1", b"2"]
    writer.flush()
    assert (events.get("cleared"), events.get("updated"), events.get("emptied")) == ([3], [7, 8], [])
    assert list(events.iterate("cleared")) == [3]


def test_map_put_remove_clear_before_flush(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    node = NodeView(node_stub, writer)
    carts = writer.map_state("carts")
    carts.put("alice", "apple", 1)
    carts.put("alice", "pear", 2)
    writer.flush()
    carts.remove("alice", "apple")
    carts.put("alice", "fig", 3)
    assert carts.get("alice", "apple") is None  # removed in the buffer, still on the node
    assert not carts.contains("alice", "apple")
    assert carts.get("alice", "pear") == 2  # from the node
    assert carts.contains("alice", "pear")
    assert carts.get("alice", "fig") == 3  # from the buffer
    assert carts.contains("alice", "fig")
    assert node.map_get("carts", "alice", "apple") == b"1"
    assert node.map_get("carts", "alice", "fig") is None

    carts.clear("alice")
    carts.put("alice", "kiwi", 4)
    assert carts.get("alice", "pear") is None  # cleared in the buffer: the node's value no longer counts
    assert not carts.contains("alice", "pear")
    assert carts.get("alice", "kiwi") == 4
    assert node.map_get("carts", "alice", "pear") == b"2"
    # Iteration flushes first, so it shows the same.
    assert list(carts.items("alice")) == [("kiwi", 4)]
    assert node.map_get("carts", "alice", "pear") is None


def test_map_remove_then_put_then_remove(writer: Writer) -> None:
    carts = writer.map_state("carts")
    carts.put("k", "m", 1)
    carts.remove("k", "m")
    assert carts.get("k", "m", default="none") == "none"
    carts.put("k", "m", 2)
    assert carts.get("k", "m") == 2
    carts.remove("k", "m")
    writer.flush()
    assert carts.get("k", "m") is None
    assert carts.is_empty("k")


def test_merges_combine_with_the_stored_aggregate(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    node = NodeView(node_stub, writer)
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    highest = writer.aggregating_state("highest", merge_operator="max_int64")
    lowest = writer.aggregating_state("lowest", merge_operator="min_int64")
    history = writer.aggregating_state("history", merge_operator="list_append")
    for state, operands in ((totals, [10, -3]), (highest, [-10, -30]), (lowest, [10, 30]), (history, ["a"])):
        for operand in operands:
            state.merge("k", operand)
    assert (totals.get("k"), highest.get("k"), lowest.get("k"), history.get("k")) == (7, -10, 10, ["a"])
    writer.flush()
    for state, operands in ((totals, [5, -1]), (highest, [-20, -5]), (lowest, [20, 5]), (history, ["b", "c"])):
        for operand in operands:
            state.merge("k", operand)
    # Stored value folded with the buffered operands, as the node will fold them.
    assert (totals.get("k"), highest.get("k"), lowest.get("k"), history.get("k")) == (11, -5, 5, ["a", "b", "c"])
    assert totals.get_many(["k", "other"]) == [11, None]
    assert node.get("totals", "k") == (7).to_bytes(8, "little", signed=True)
    writer.flush()
    assert (totals.get("k"), highest.get("k"), lowest.get("k"), history.get("k")) == (11, -5, 5, ["a", "b", "c"])


def test_merge_after_clear_ignores_the_stored_aggregate(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    node = NodeView(node_stub, writer)
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    highest = writer.aggregating_state("highest", merge_operator="max_int64")
    history = writer.aggregating_state("history", merge_operator="list_append")
    totals.merge("k", 100)
    highest.merge("k", 100)
    history.merge("k", "old")
    writer.flush()
    for state in (totals, highest, history):
        state.clear("k")
    assert (totals.get("k"), highest.get("k"), history.get("k")) == (None, None, None)
    totals.merge("k", 1)
    highest.merge("k", -1)
    history.merge("k", "new")
    assert (totals.get("k"), highest.get("k"), history.get("k")) == (1, -1, ["new"])
    assert node.get("totals", "k") == (100).to_bytes(8, "little", signed=True)
    writer.flush()
    assert (totals.get("k"), highest.get("k"), history.get("k")) == (1, -1, ["new"])


def test_merge_clear_merge_within_one_buffer(writer: Writer) -> None:
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    totals.merge("k", 5)
    totals.clear("k")
    totals.merge("k", 2)
    totals.merge("k", 3)
    assert totals.get("k") == 5
    writer.flush()
    assert totals.get("k") == 5


def test_reads_across_a_partly_flushed_buffer(writer: Writer) -> None:
    """Writes in flight (sent, not yet acknowledged) and writes still buffered both show."""
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    for session in writer.sessions:
        session.start_flush()
    for i in range(2500):  # fills two batches (sent without waiting) and leaves 500 buffered
        totals.merge(f"k{i % 10}", 1)
    assert totals.get_many([f"k{i}" for i in range(10)]) == [250] * 10
    writer.flush()
    assert totals.get_many([f"k{i}" for i in range(10)]) == [250] * 10


def test_buffered_writes_show_across_two_shards(client: StateClient, namespace: str) -> None:
    writer = client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=1)
    values = writer.value_state("v")
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    keys = [f"k{i}" for i in range(200)]  # about half in each shard
    values.put_many({k: i for i, k in enumerate(keys) if i % 2 == 0})
    totals.merge_many((k, i) for i, k in enumerate(keys))
    writer.flush()
    values.put_many({k: -i for i, k in enumerate(keys) if i % 4 == 0})
    for i, k in enumerate(keys):
        if i % 3 == 0:
            values.delete(k)
    totals.merge_many((k, 1) for k in keys)

    def expected_value(i: int) -> int | None:
        if i % 3 == 0:
            return None
        if i % 4 == 0:
            return -i
        return i if i % 2 == 0 else None

    assert all(len(s.buffer) for s in writer.sessions)  # both shards hold buffered writes
    assert values.get_many(keys) == [expected_value(i) for i in range(200)]
    assert totals.get_many(keys) == [i + 1 for i in range(200)]
    writer.flush()
    assert values.get_many(keys) == [expected_value(i) for i in range(200)]
    assert totals.get_many(keys) == [i + 1 for i in range(200)]

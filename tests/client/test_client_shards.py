"""Several shards per writer, key routing, and keys outside the writer's key groups."""
from __future__ import annotations

import grpc
import pytest

from stateserver.client import KeyGroupOutOfRangeError, KeyGroupRange, StateClient, key_group_for, ranges_for_parallelism
from stateserver.protocol.operations import ReadOp
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import NodeProcess, keys_in_key_groups, read_request, read_values, shard_ref


def test_keys_go_to_the_shard_of_their_key_group(client: StateClient, namespace: str, node: NodeProcess,
                                                 node_stub: state_pb2_grpc.StateServiceStub) -> None:
    writer = client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=1)
    assert [str(r) for r in writer.key_groups] == ["0-63", "64-127"]
    open_shards = [shard for worker in range(node.workers) for shard in state_pb2_grpc.StateServiceStub(
        node.worker_channel(worker)).NodeInfo(pb.NodeInfoRequest(), timeout=10).open_shards]
    assert {f"{namespace}/0-63", f"{namespace}/64-127"} <= set(open_shards)

    values = writer.value_state("v")
    keys = [f"key-{i}" for i in range(400)]
    values.put_many({key: i for i, key in enumerate(keys)})
    values.put("single", "one")
    writer.flush()
    assert values.get_many(keys) == list(range(400))
    assert values.get("single") == "one"

    low = [k for k in keys if key_group_for(k.encode(), 128) < 64]
    high = [k for k in keys if key_group_for(k.encode(), 128) >= 64]
    assert low and high
    # Each key is stored in its own shard: read each shard past the client.
    low_ref, high_ref = shard_ref(namespace, (0, 63), 1), shard_ref(namespace, (64, 127), 1)
    assert read_values(node_stub, read_request(low_ref, "v", ReadOp.GET, [k.encode() for k in low])) == [
        str(keys.index(k)).encode() for k in low
    ]
    assert read_values(node_stub, read_request(high_ref, "v", ReadOp.GET, [k.encode() for k in high])) == [
        str(keys.index(k)).encode() for k in high
    ]
    with pytest.raises(grpc.RpcError) as error:  # and the other shard refuses it
        read_values(node_stub, read_request(high_ref, "v", ReadOp.GET, [low[0].encode()]))
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_every_state_kind_across_two_shards(client: StateClient, namespace: str) -> None:
    writer = client.open_writer(namespace, key_groups=[KeyGroupRange(0, 63), KeyGroupRange(64, 127)], epoch=1)
    low, high = keys_in_key_groups(1, 128, 0, 63)[0], keys_in_key_groups(1, 128, 64, 127)[0]
    events = writer.list_state("l")
    carts = writer.map_state("m")
    totals = writer.aggregating_state("s", merge_operator="sum_int64")
    for key in (low, high):
        events.add_all(key, [key, 1])
        carts.put(key, "owner", key)
        totals.merge(key, len(key))
    assert (events.get(low), events.get(high)) == ([low, 1], [high, 1])  # before the flush
    writer.flush()
    for key in (low, high):
        assert events.get(key) == [key, 1]
        assert list(events.iterate(key)) == [key, 1]
        assert list(carts.items(key)) == [("owner", key)]
        assert totals.get(key) == len(key)


def test_writers_of_parallel_subtasks_own_their_ranges(node_address: str, namespace: str) -> None:
    ranges = ranges_for_parallelism(128, 3)
    clients = [StateClient(node_address) for _ in ranges]
    try:
        clients[0].create_namespace(namespace, max_key_groups=128)
        writers = [c.open_writer(namespace, key_groups=r, epoch=1) for c, r in zip(clients, ranges)]
        keys = [f"user-{i}" for i in range(300)]
        for key in keys:
            owner = next(w for w, r in zip(writers, ranges) if key_group_for(key.encode(), 128) in r)
            owner.value_state("v").put(key, key.upper())
        for writer in writers:
            writer.flush()
        for writer, key_group_range in zip(writers, ranges):
            mine = [k for k in keys if key_group_for(k.encode(), 128) in key_group_range]
            assert writer.value_state("v").get_many(mine) == [k.upper() for k in mine]
    finally:
        for c in clients:
            c.close()


def test_the_client_refuses_keys_outside_its_key_groups(client: StateClient, namespace: str) -> None:
    writer = client.open_writer(namespace, key_groups="0-63", epoch=1)
    inside, outside = keys_in_key_groups(1, 128, 0, 63)[0], keys_in_key_groups(1, 128, 64, 127)[0]
    values = writer.value_state("v")
    events = writer.list_state("l")
    carts = writer.map_state("m")
    totals = writer.aggregating_state("s", merge_operator="sum_int64")
    attempts = [
        lambda: values.put(outside, 1),
        lambda: values.put_many({inside: 1, outside: 2}),
        lambda: values.delete(outside),
        lambda: values.get(outside),
        lambda: values.get_many([inside, outside]),
        lambda: events.add(outside, 1),
        lambda: events.get(outside),
        lambda: carts.put(outside, "a", 1),
        lambda: carts.get(outside, "a"),
        lambda: totals.merge(outside, 1),
        lambda: totals.clear(outside),
    ]
    for attempt in attempts:
        with pytest.raises(KeyGroupOutOfRangeError, match="not owned by this writer"):
            attempt()
    # Nothing was buffered by the refused calls, not even the good half of put_many.
    assert len(writer.sessions[0].buffer) == 0
    writer.flush()
    assert values.get(inside) is None

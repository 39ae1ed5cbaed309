"""Batched writes: applied atomically and in order, several batches in flight per shard."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stateserver.client import StateClient, Writer


@pytest.fixture
def small_batch_writer(node_address: str, namespace: str) -> Iterator[Writer]:
    """A writer whose batches hold 10 operations, so a few hundred writes make many batches
    (and no more while the node is busy)."""
    with StateClient(node_address, batch_ops=10, busy_batch_ops=10) as client:
        client.create_namespace(namespace, max_key_groups=128)
        yield client.open_writer(namespace, key_groups="0-127", epoch=1)


def count_write_batches(writer: Writer) -> list[int]:
    """Record, per WriteBatch sent, how many earlier batches of the shard were still unacknowledged."""
    in_flight_when_sent: list[int] = []
    session = writer.sessions[0]
    original = session.connection.start

    def start(method: str, request: Any, **kwargs: Any) -> Any:
        # A batch that overtook its predecessor on the way is sent again with its number: not counted.
        if method == "WriteBatch" and request.sequence > len(in_flight_when_sent):
            assert request.sequence == len(in_flight_when_sent) + 1  # numbered 1, 2, 3 ...
            in_flight_when_sent.append(len(session._in_flight))
        return original(method, request, **kwargs)

    session.connection.start = start  # type: ignore[method-assign]
    return in_flight_when_sent


def test_put_delete_put_in_one_batch_ends_with_the_last_put(writer: Writer) -> None:
    sent = count_write_batches(writer)
    values = writer.value_state("v")
    values.put("k", "first")
    values.delete("k")
    values.put("k", "last")
    values.put("gone", 1)
    values.delete("gone")
    writer.flush()
    assert len(sent) == 1
    assert values.get_many(["k", "gone"]) == ["last", None]


def test_merges_fold_in_order_within_a_batch(writer: Writer) -> None:
    sent = count_write_batches(writer)
    history = writer.aggregating_state("history", merge_operator="list_append")
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    for i in range(20):
        history.merge("k", i)
        totals.merge("k", i)
    totals.clear("k")  # a clear in the middle of the batch drops the operands before it
    history.merge("k", "end")
    totals.merge("k", 1000)
    totals.merge("k", -1)
    writer.flush()
    assert len(sent) == 1
    assert history.get("k") == list(range(20)) + ["end"]
    assert totals.get("k") == 999


def test_a_mixed_batch_over_every_kind_applies_in_order(writer: Writer) -> None:
    values = writer.value_state("v")
    events = writer.list_state("l")
    carts = writer.map_state("m")
    values.put("k", 1)
    events.add("k", 1)
    carts.put("k", "a", 1)
    events.clear("k")
    carts.remove("k", "a")
    events.add("k", 2)
    carts.put("k", "b", 2)
    values.put("k", 2)
    writer.flush()
    assert values.get("k") == 2
    assert events.get("k") == [2]
    assert list(carts.items("k")) == [("b", 2)]


def test_fifty_batches_in_flight_apply_in_order(small_batch_writer: Writer) -> None:
    writer = small_batch_writer
    sent = count_write_batches(writer)
    values = writer.value_state("v")
    events = writer.list_state("l")
    # 500 puts to 7 overlapping keys: each key is written in most of the 50 batches.
    for i in range(500):
        values.put(f"k{i % 7}", i)
    writer.flush()
    assert len(sent) == 50
    assert max(sent) == writer.sessions[0].limits.max_in_flight - 1  # batches were sent without waiting
    assert values.get_many([f"k{j}" for j in range(7)]) == [max(i for i in range(500) if i % 7 == j) for j in range(7)]

    # Appends show the order of application directly: any reordering of batches would show.
    for i in range(500):
        events.add(f"k{i % 3}", i)
    writer.flush()
    for j in range(3):
        assert events.get(f"k{j}") == [i for i in range(500) if i % 3 == j]


def test_flushes_by_size_as_well_as_by_count(node_address: str, namespace: str) -> None:
    with StateClient(node_address, batch_bytes=64 << 10) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        sent = count_write_batches(writer)
        blobs = writer.value_state("blobs")
        for i in range(20):
            blobs.put(f"k{i}", "x" * (16 << 10))  # 3 per batch: a batch stays within 64 KiB
        assert len(sent) == 6  # sent while writing, without a flush
        writer.flush()
        assert blobs.get_many([f"k{i}" for i in range(20)]) == ["x" * (16 << 10)] * 20



class _HeldCall:
    """A call in flight that reports itself not done while ``held`` is set (a busy node)."""

    def __init__(self, call: Any, held: threading.Event) -> None:
        self._call, self._held = call, held

    def done(self) -> bool:
        return not self._held.is_set() and bool(self._call.done())

    def result(self) -> Any:
        return self._call.result()


def test_batches_grow_while_every_batch_in_flight_is_being_applied(node_address: str, namespace: str) -> None:
    with StateClient(node_address, batch_ops=10, busy_batch_ops=40, max_in_flight=1) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        session = writer.sessions[0]
        sizes: list[int] = []
        busy = threading.Event()
        original = session.connection.start

        def start(method: str, request: Any, **kwargs: Any) -> Any:
            if method == "WriteBatch":
                sizes.append(len(request.ops))
            return _HeldCall(original(method, request, **kwargs), busy)

        session.connection.start = start  # type: ignore[method-assign]
        values = writer.value_state("v")
        busy.set()
        for i in range(50):
            values.put(f"k{i}", i)
        values.put_many({f"k{i}": i for i in range(50, 130)})
        assert sizes == [10, 40, 40, 40]  # the first leaves at 10; the node "busy", the next ones grow
        busy.clear()
        writer.flush()
        values.put_many({f"k{i}": i for i in range(130, 140)})  # nothing in flight: leaves at 10 again
        assert sizes == [10, 40, 40, 40, 10]
        writer.flush()
        assert values.get_many([f"k{i}" for i in range(140)]) == list(range(140))

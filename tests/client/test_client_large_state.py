"""The acceptance test: 10,000 items in one list and 10,000 entries in one map, read in pages."""
from __future__ import annotations

import math
import time
from typing import Any

import pytest

from stateserver.client import Writer

ITEMS = 10_000
CHUNK = 1_000
PAGE = 333


def count_iterate_calls(writer: Writer) -> list[int]:
    """Record the page limit of every Iterate request the writer sends."""
    limits: list[int] = []
    connection = writer.sessions[0].connection
    original = connection.call

    def call(method: str, request: Any, **kwargs: Any) -> Any:
        if method == "Iterate":
            limits.append(request.limit)
        return original(method, request, **kwargs)

    connection.call = call  # type: ignore[method-assign]
    return limits


@pytest.mark.timeout(120)
def test_ten_thousand_list_appends_take_linear_time_and_iterate_in_pages(writer: Writer) -> None:
    events = writer.list_state("events")

    def append_chunk(key: str, start: int) -> float:
        started = time.perf_counter()
        for i in range(start, start + CHUNK):
            events.add(key, i)
        writer.flush()  # the node has applied the chunk's appends when this returns
        return time.perf_counter() - started

    for start in range(0, 7 * CHUNK, CHUNK):
        append_chunk("one-key", start)
    # Appending must not cost O(length of the list). The last 3,000 appends go to a list of
    # 7,000-10,000 items; each round also appends 1,000 items to a new, short list. If an append
    # cost O(length), the long list's chunks would take about 17 times as long as the short
    # ones'. Interleaving the two puts both under the same machine load, and the fastest of
    # three rounds on each side filters out scheduling noise, which only ever slows.
    long_list, short_list = [], []
    for round_number in range(3):
        long_list.append(append_chunk("one-key", (7 + round_number) * CHUNK))
        short_list.append(append_chunk(f"short-{round_number}", 0))
    assert min(long_list) <= 5 * min(short_list) + 0.02, (
        f"appends slow down as the list grows: long list {long_list}, short list {short_list}")

    pages = count_iterate_calls(writer)
    assert list(events.iterate("one-key", page_size=PAGE)) == list(range(ITEMS))
    assert pages == [PAGE] * math.ceil(ITEMS / PAGE)
    assert events.get("one-key") == list(range(ITEMS))  # the whole list in one reply, too
    assert events.get("short-2") == list(range(CHUNK))


@pytest.mark.timeout(120)
def test_ten_thousand_map_entries_iterate_in_pages(writer: Writer) -> None:
    table = writer.map_state("table")
    for i in reversed(range(ITEMS)):  # written in the opposite of their key order
        table.put("one-key", f"entry-{i:05d}", {"i": i})
    writer.flush()
    pages = count_iterate_calls(writer)
    assert list(table.items("one-key", page_size=PAGE)) == [(f"entry-{i:05d}", {"i": i}) for i in range(ITEMS)]
    assert pages == [PAGE] * math.ceil(ITEMS / PAGE)
    assert list(table.keys("one-key", page_size=PAGE)) == [f"entry-{i:05d}" for i in range(ITEMS)]
    assert table.get("one-key", "entry-04321") == {"i": 4321}
    assert table.contains("one-key", "entry-09999") and not table.contains("one-key", "entry-10000")

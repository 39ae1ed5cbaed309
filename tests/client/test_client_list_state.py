"""List state through the client: add, add_all, update, get, clear, iterate in pages."""
from __future__ import annotations

from stateserver.client import BYTES, Writer


def test_add_add_all_get_after_flush(writer: Writer) -> None:
    events = writer.list_state("events")
    events.add("user-1", {"n": 1})
    events.add_all("user-1", [{"n": 2}, {"n": 3}])
    events.add("user-2", "other")
    writer.flush()
    events.add_all("user-1", [{"n": 4}])  # appends after what the node already has
    writer.flush()

    assert events.get("user-1") == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert events.get("user-2") == ["other"]
    assert events.get("nobody") == []


def test_update_replaces_and_clear_empties(writer: Writer) -> None:
    items = writer.list_state("items")
    items.add_all("k", [1, 2, 3])
    writer.flush()
    items.update("k", [9, 8])
    writer.flush()
    assert items.get("k") == [9, 8]
    items.add("k", 7)  # positions continue after an update, with nothing left over from before
    writer.flush()
    assert items.get("k") == [9, 8, 7]
    assert list(items.iterate("k", page_size=1)) == [9, 8, 7]

    items.clear("k")
    writer.flush()
    assert items.get("k") == []
    assert list(items.iterate("k")) == []
    items.update("k", [])
    writer.flush()
    assert items.get("k") == []


def test_iterate_in_pages_keeps_order(writer: Writer) -> None:
    numbers = writer.list_state("numbers")
    numbers.add_all("k", range(100))
    writer.flush()
    for page_size in (1, 7, 50, 100, 1000):
        assert list(numbers.iterate("k", page_size=page_size)) == list(range(100))


def test_keys_that_prefix_each_other_keep_separate_lists(writer: Writer) -> None:
    # Stored keys are length-prefixed: the list of "a" must not run into the list of "ab".
    lists = writer.list_state("lists", key_serializer=BYTES, value_serializer=BYTES)
    lists.add_all(b"a", [b"1", b"2"])
    lists.add_all(b"ab", [b"3"])
    lists.add_all(b"a\x00", [b"4"])
    writer.flush()
    lists.clear(b"a")
    lists.add(b"a", b"5")
    writer.flush()
    assert lists.get(b"a") == [b"5"]
    assert lists.get(b"ab") == [b"3"]
    assert lists.get(b"a\x00") == [b"4"]
    assert list(lists.iterate(b"ab")) == [b"3"]


def test_empty_and_binary_elements_round_trip(writer: Writer) -> None:
    blobs = writer.list_state("blobs", value_serializer=BYTES)
    elements = [b"", b"\x00\xff" * 100, b"", bytes(range(256))]
    blobs.add_all("k", elements)
    writer.flush()
    assert blobs.get("k") == elements
    assert list(blobs.iterate("k", page_size=3)) == elements

"""Map state through the client: put, get, remove, contains, items, keys, values, is_empty, clear."""
from __future__ import annotations

from stateserver.client import BYTES, INT64, Writer


def test_every_map_operation_after_flush(writer: Writer) -> None:
    carts = writer.map_state("carts")
    carts.put("alice", "apple", 3)
    carts.put("alice", "pear", {"count": 1})
    carts.put_all("alice", {"fig": 0, "kiwi": [1, 2]})
    carts.put("bob", "apple", 10)
    writer.flush()

    assert carts.get("alice", "apple") == 3
    assert carts.get("alice", "pear") == {"count": 1}
    assert carts.get("alice", "fig") == 0
    assert carts.get("alice", "plum") is None
    assert carts.get("alice", "plum", default="none") == "none"
    assert carts.contains("alice", "fig") and not carts.contains("alice", "plum")
    assert not carts.contains("carol", "apple")
    # Entries come in map-key byte order.
    assert list(carts.items("alice")) == [("apple", 3), ("fig", 0), ("kiwi", [1, 2]), ("pear", {"count": 1})]
    assert list(carts.keys("alice")) == ["apple", "fig", "kiwi", "pear"]
    assert list(carts.values("alice")) == [3, 0, [1, 2], {"count": 1}]
    assert not carts.is_empty("alice") and carts.is_empty("carol")

    carts.put("alice", "apple", 4)  # overwrite
    carts.remove("alice", "fig")
    carts.remove("alice", "never-there")
    writer.flush()
    assert carts.get("alice", "apple") == 4
    assert not carts.contains("alice", "fig")
    assert list(carts.keys("alice")) == ["apple", "kiwi", "pear"]

    carts.clear("alice")
    writer.flush()
    assert carts.is_empty("alice")
    assert list(carts.items("alice")) == []
    assert carts.get("alice", "apple") is None
    assert list(carts.items("bob")) == [("apple", 10)]  # another key's map is untouched


def test_items_in_pages(writer: Writer) -> None:
    table = writer.map_state("table", map_key_serializer=INT64.__class__(), value_serializer=INT64)
    # Little-endian int64 map keys: byte order is not numeric order, and the client must keep byte order.
    for i in range(50):
        table.put("k", i, i * i)
    writer.flush()
    expected = sorted(((i, i * i) for i in range(50)), key=lambda item: INT64.dumps(item[0]))
    for page_size in (1, 3, 49, 50, 51):
        assert list(table.items("k", page_size=page_size)) == expected


def test_keys_that_prefix_each_other_keep_separate_maps(writer: Writer) -> None:
    maps = writer.map_state("maps", key_serializer=BYTES, map_key_serializer=BYTES, value_serializer=BYTES)
    maps.put(b"a", b"x", b"1")
    maps.put(b"ab", b"x", b"2")
    maps.put(b"a", b"bx", b"3")
    writer.flush()
    maps.clear(b"a")
    writer.flush()
    assert list(maps.items(b"a")) == []
    assert list(maps.items(b"ab")) == [(b"x", b"2")]
    assert maps.get(b"ab", b"x") == b"2"

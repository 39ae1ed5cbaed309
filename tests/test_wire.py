"""The packed batch encoding shared by client and node."""
from __future__ import annotations

import pytest

from stateserver.protocol import wire

SAMPLES = [[], [b""], [b"", b""], [b"a"], [b"abc", b"", b"\x00\xff", b"x" * 1000], [bytes([i]) * i for i in range(50)]]


@pytest.mark.parametrize("items", SAMPLES, ids=lambda items: f"{len(items)}-items")
def test_pack_and_unpack_round_trip(items: list[bytes]) -> None:
    blob, lengths = wire.pack(items)
    assert blob == b"".join(items)
    assert lengths == [len(i) for i in items]
    assert wire.unpack(blob, lengths) == items


@pytest.mark.parametrize(("blob", "lengths"), [
    (b"abc", [1, 1]),      # lengths add up to less than the blob
    (b"abc", [2, 2]),      # to more
    (b"abc", []),          # no lengths for a blob
    (b"", [1]),            # lengths for an empty blob
])
def test_unpack_refuses_lengths_that_do_not_add_up(blob: bytes, lengths: list[int]) -> None:
    with pytest.raises(ValueError, match="add up"):
        wire.unpack(blob, lengths)


@pytest.mark.parametrize("elements", SAMPLES, ids=lambda items: f"{len(items)}-elements")
def test_pack_list_round_trip(elements: list[bytes]) -> None:
    packed = wire.pack_list(elements)
    assert len(packed) == sum(4 + len(e) for e in elements)
    assert wire.unpack_list(packed) == elements


def test_pack_list_is_little_endian_length_then_bytes() -> None:
    assert wire.pack_list([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    # Concatenated encodings are the encoding of the concatenated lists (list_append relies on it).
    assert wire.pack_list([b"a"]) + wire.pack_list([b"b", b"c"]) == wire.pack_list([b"a", b"b", b"c"])


@pytest.mark.parametrize("blob", [b"\x01", b"\x01\x00\x00", b"\x02\x00\x00\x00a", b"\x00\x00\x00\x00\x05\x00\x00\x00abcd"])
def test_unpack_list_refuses_truncated_input(blob: bytes) -> None:
    with pytest.raises(ValueError, match="truncated"):
        wire.unpack_list(blob)


def test_unpack_of_many_items_and_of_lengths_far_past_the_blob() -> None:
    items = [bytes([i % 256]) * (i % 7) for i in range(100_000)]
    blob, lengths = wire.pack(items)
    assert wire.unpack(blob, lengths) == items
    for lengths in ([(1 << 32) - 1], [(1 << 32) - 1, 1], [1 << 31, 1 << 31]):  # uint32 lengths from the wire
        with pytest.raises(ValueError, match="add up"):
            wire.unpack(b"abc", lengths)


def test_unpack_reuses_a_layout_only_for_the_same_lengths() -> None:
    first, second = [b"k" * 16, b"v" * 300], [b"x" * 16, b"y" * 300]  # 300: past the cached layouts
    for items in (first, second, [b"a" * 16, b"b" * 100], [b"c" * 16, b"d" * 100], [b"e" * 100, b"f" * 16]):
        blob, lengths = wire.pack(items)
        assert wire.unpack(blob, lengths) == items
    blob, lengths = wire.pack([b"a" * 16, b"b" * 100])
    with pytest.raises(ValueError, match="add up"):  # a cached layout still checks the blob's size
        wire.unpack(blob + b"!", lengths)


@pytest.mark.parametrize("count", [wire.UNIFORM_CHUNK + 1, 2 * wire.UNIFORM_CHUNK, 1000])
@pytest.mark.parametrize("size", [1, 16, 4096, 4097])  # 4097: past the sizes cut by a per-size layout
def test_unpack_of_many_items_of_one_size(count: int, size: int) -> None:
    items = [bytes([i % 256]) * size for i in range(count)]
    blob, lengths = wire.pack(items)
    assert wire.unpack(blob, lengths) == items
    for wrong in (blob + b"!", blob[:-1]):
        with pytest.raises(ValueError, match="add up"):
            wire.unpack(wrong, lengths)

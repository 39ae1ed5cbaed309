"""Packed batch encoding shared by client and node.

A batch of byte strings travels as one ``bytes`` blob plus a packed ``uint32`` list of
lengths: a 1000-item batch then costs two protobuf fields instead of a thousand messages.
"""
from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Sequence

_U32 = struct.Struct("<I")
# Items of one size are cut by a layout of this many items, compiled once per item format,
# whatever the batch's count (counts vary from batch to batch: a layout per count missed the
# cache for most batches, and compiling it cost 3 times the slicing: 100 -> 30 ns an item).
UNIFORM_CHUNK = 256
_MAX_UNIFORM_LENGTH = 1 << 12


def pack(items: Sequence[bytes]) -> tuple[bytes, list[int]]:
    return b"".join(items), list(map(len, items))


class _FormatCodes(dict[int, str]):
    """``struct`` format codes by item length (16 -> "16s"); codes of short lengths are kept."""

    def __missing__(self, length: int) -> str:
        code = f"{length}s"
        if type(length) is int and 0 <= length < 4096:
            self[length] = code
        return code


_FORMAT_CODES = _FormatCodes()
# Compiled layouts by their lengths (as bytes: every length below 256): a writer's batches
# mostly repeat one layout (fixed-size keys and values), so building and compiling the format
# (about half the cost of unpacking) happens once. Bounded: cleared when full.
_LAYOUTS: dict[bytes, struct.Struct] = {}
_MAX_LAYOUTS = 256


def unpack(blob: bytes, lengths: Sequence[int]) -> list[bytes]:
    """Slice ``blob`` by ``lengths``; raises ``ValueError`` if they do not add up.

    The hot path of every batch: one ``struct`` format of ``"<len>s"`` codes slices the whole
    blob in C, about twice as fast as slicing item by item in Python, and a layout seen before
    is reused: 90 -> 40 us for 1000 items.
    """
    lengths = list(lengths)  # a protobuf repeated field is iterated once, here
    count = len(lengths)
    if count > UNIFORM_CHUNK and lengths.count(lengths[0]) == count and 0 < lengths[0] <= _MAX_UNIFORM_LENGTH:
        return unpack_uniform(blob, count, lengths[0], "<", f"{lengths[0]}s")
    try:
        signature = bytes(lengths)
    except (ValueError, TypeError):  # a length of 256 or more, or not an int: not cached
        signature = None
    layout = _LAYOUTS.get(signature) if signature is not None else None
    if layout is None:
        try:
            layout = struct.Struct("<" + "".join(map(_FORMAT_CODES.__getitem__, lengths)))
        except (struct.error, TypeError):  # not plain non-negative ints: slice item by item
            return _unpack_by_slicing(blob, lengths)
        if signature is not None:
            if len(_LAYOUTS) >= _MAX_LAYOUTS:
                _LAYOUTS.clear()
            _LAYOUTS[signature] = layout
    if layout.size != len(blob):
        raise ValueError(f"lengths add up to {layout.size} bytes but the blob has {len(blob)}")
    return list(layout.unpack(blob))


@functools.lru_cache(maxsize=1024)
def _uniform_layout(byte_order: str, item: str, count: int) -> struct.Struct:
    return struct.Struct(byte_order + item * count)


def unpack_uniform(blob: bytes, count: int, item_bytes: int, byte_order: str, item: str) -> list[object]:
    """What the ``struct`` format ``item`` (of ``item_bytes`` bytes) unpacks from each of
    ``count`` items of ``blob``, in order; raises ``ValueError`` if the sizes do not add up."""
    if count * item_bytes != len(blob):
        raise ValueError(f"lengths add up to {count * item_bytes} bytes but the blob has {len(blob)}")
    whole = count - count % UNIFORM_CHUNK
    view = memoryview(blob)  # cut without copying
    chunks = _uniform_layout(byte_order, item, UNIFORM_CHUNK).iter_unpack(view[:whole * item_bytes])
    found = list(itertools.chain.from_iterable(chunks))
    if whole < count:
        found += _uniform_layout(byte_order, item, count - whole).unpack(view[whole * item_bytes:])
    return found


def _unpack_by_slicing(blob: bytes, lengths: Sequence[int]) -> list[bytes]:
    ends = list(itertools.accumulate(lengths))
    if (ends[-1] if ends else 0) != len(blob):
        raise ValueError(f"lengths add up to {ends[-1] if ends else 0} bytes but the blob has {len(blob)}")
    starts = itertools.chain((0,), ends)
    return [blob[start:end] for start, end in zip(starts, ends)]


def pack_list(elements: Sequence[bytes]) -> bytes:
    """A whole list in one value: each element as u32 little-endian length + bytes."""
    return b"".join(_U32.pack(len(e)) + e for e in elements)


def unpack_list(blob: bytes) -> list[bytes]:
    elements: list[bytes] = []
    offset, size = 0, len(blob)
    while offset < size:
        if offset + 4 > size:
            raise ValueError("truncated list encoding")
        (length,) = _U32.unpack_from(blob, offset)
        offset += 4
        if offset + length > size:
            raise ValueError("truncated list encoding")
        elements.append(blob[offset : offset + length])
        offset += length
    return elements

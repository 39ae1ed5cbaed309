"""Batches in stored form: keys with their key-group prefix, values with their header byte.

A client that packs keys as the node stores them (``kg(2) | key``, see shard/layout.py) and
values with the plain header (``0x00 | value``) spares the node a hash, two concatenations and a
slice per key: the node checks every key group and header of a batch with one ``struct`` unpack
over the packed blob (in C, no Python per key) and hands RocksDB the slices as they came.

The client side (``stored_keys``, ``stored_values``, ``plain_values``) and the node side
(``key_groups``, ``headers``, ``strip``) are pure functions over packed blobs and lengths.
"""
from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Sequence

from stateserver.protocol import wire
from stateserver.protocol.keygroups import KEY_GROUP_PREFIX_BYTES, KEY_GROUP_PREFIXES, key_groups_for

PLAIN_HEADER = b"\x00"
HEADER_BYTES = 1


def stored_keys(keys: Sequence[bytes], max_key_groups: int) -> tuple[bytes, list[int]]:
    """``keys`` packed with their key-group prefixes: (blob, lengths). No Python bytecode per key."""
    groups = key_groups_for(keys, max_key_groups)
    prefixes = map(KEY_GROUP_PREFIXES.__getitem__, groups)
    blob = b"".join(itertools.chain.from_iterable(zip(prefixes, keys)))
    return blob, list(map(operator.add, map(len, keys), itertools.repeat(KEY_GROUP_PREFIX_BYTES)))


def stored_values(values: Sequence[bytes]) -> tuple[bytes, list[int]]:
    """``values`` packed, each behind the plain header: (blob, lengths)."""
    blob = b"".join(itertools.chain.from_iterable(zip(itertools.repeat(PLAIN_HEADER), values)))
    return blob, list(map(operator.add, map(len, values), itertools.repeat(HEADER_BYTES)))


class _Layouts:
    """Compiled ``struct`` layouts by item lengths, per kind: a writer's batches mostly repeat
    one layout (fixed-size keys and values), so the format is built and compiled once."""

    _MAX = 256

    def __init__(self, byte_order: str, head: str, head_bytes: int, *, keep_rest: bool) -> None:
        self._byte_order = byte_order
        self._head = head  # struct code read from the front of each item ("" skips it)
        self._head_bytes = head_bytes
        self._keep_rest = keep_rest  # unpack what follows the head too (else skip it)
        self._cache: dict[bytes, struct.Struct] = {}

    def get(self, lengths: Sequence[int]) -> struct.Struct:
        try:
            signature: bytes | None = bytes(lengths)
        except (ValueError, TypeError):  # a length of 256 or more: not cached
            signature = None
        layout = self._cache.get(signature) if signature is not None else None
        if layout is None:
            layout = self._compile(lengths)
            if signature is not None:
                if len(self._cache) >= self._MAX:
                    self._cache.clear()
                self._cache[signature] = layout
        return layout

    def _compile(self, lengths: Sequence[int]) -> struct.Struct:
        head, size = self._head, self._head_bytes
        rest = "s" if self._keep_rest else "x"
        parts = []
        # By runs of equal lengths (fixed-size keys and values: one run), not a string per item:
        # a batch of a count not seen before compiles in a fraction of a millisecond.
        for length, run in itertools.groupby(lengths):
            if type(length) is not int or length < size:
                raise ValueError(f"an item of {length} bytes is shorter than its {size}-byte stored-form head")
            parts.append(f"{head}{length - size}{rest}" * sum(1 for _ in run))
        return struct.Struct(self._byte_order + "".join(parts))

    def unpack_uniform(self, blob: bytes, count: int, length: int) -> list[object]:
        """As ``get(lengths).unpack(blob)`` for ``count`` items of ``length`` bytes each, by a
        layout compiled once whatever the count."""
        if length < self._head_bytes:
            raise ValueError(f"an item of {length} bytes is shorter than its {self._head_bytes}-byte stored-form head")
        rest = "s" if self._keep_rest else "x"
        item = f"{self._head}{length - self._head_bytes}{rest}"
        return wire.unpack_uniform(blob, count, length, self._byte_order, item)


_KEY_GROUPS = _Layouts(">", "H", KEY_GROUP_PREFIX_BYTES, keep_rest=False)
_HEADERS = _Layouts("<", "B", HEADER_BYTES, keep_rest=False)
_WITHOUT_KEY_GROUP = _Layouts("<", f"{KEY_GROUP_PREFIX_BYTES}x", KEY_GROUP_PREFIX_BYTES, keep_rest=True)
_KEY_GROUPS_AND_KEYS = _Layouts(">", "H", KEY_GROUP_PREFIX_BYTES, keep_rest=True)
_WITHOUT_HEADER = _Layouts("<", f"{HEADER_BYTES}x", HEADER_BYTES, keep_rest=True)


def _unpack(layouts: _Layouts, blob: bytes, lengths: Sequence[int]) -> tuple[object, ...]:
    count = len(lengths)
    if (count > wire.UNIFORM_CHUNK and type(lengths[0]) is int
            and list(lengths).count(lengths[0]) == count):  # fixed-size keys or values: the common case
        return tuple(layouts.unpack_uniform(blob, count, lengths[0]))
    layout = layouts.get(lengths)
    if layout.size != len(blob):
        raise ValueError(f"lengths add up to {layout.size} bytes but the blob has {len(blob)}")
    return layout.unpack(blob)


def key_groups(blob: bytes, lengths: Sequence[int]) -> tuple[int, ...]:
    """The key group of every stored key of a packed blob; ValueError if a key is shorter than
    its prefix or the lengths do not add up."""
    return _unpack(_KEY_GROUPS, blob, lengths)  # type: ignore[return-value]


def key_groups_and_raw_keys(blob: bytes, lengths: Sequence[int]) -> tuple[tuple[int, ...], tuple[bytes, ...]]:
    """``key_groups`` and ``raw_keys`` of a blob in one pass over it (a write needs both)."""
    both = _unpack(_KEY_GROUPS_AND_KEYS, blob, lengths)
    return both[0::2], both[1::2]  # type: ignore[return-value]


def headers(blob: bytes, lengths: Sequence[int]) -> tuple[int, ...]:
    """The header byte of every stored value of a packed blob."""
    return _unpack(_HEADERS, blob, lengths)  # type: ignore[return-value]


def raw_keys(blob: bytes, lengths: Sequence[int]) -> list[bytes]:
    """The keys of a packed blob of stored keys, without their key-group prefixes."""
    return list(_unpack(_WITHOUT_KEY_GROUP, blob, lengths))  # type: ignore[arg-type]


def plain_values(blob: bytes, lengths: Sequence[int]) -> list[bytes]:
    """The values of a packed blob of stored values, without their header bytes (the client's
    side of a stored-form read reply; every item has its header)."""
    return list(_unpack(_WITHOUT_HEADER, blob, lengths))  # type: ignore[arg-type]

"""Stored form on the client: a batch's keys packed with the key groups the router computed, and
a read reply's values cut out without their headers.

The router hashes every key once (to find its shard); a batch reuses those key groups for the
keys' prefixes instead of hashing each key again (as ``stateserver.protocol.stored_form.stored_keys``
does, for callers that know only the keys). No Python bytecode per key.
"""
from __future__ import annotations

import functools
import itertools
import operator
import struct
from collections.abc import Sequence

from stateserver.protocol import stored_form
from stateserver.protocol.keygroups import KEY_GROUP_PREFIX_BYTES, KEY_GROUP_PREFIXES
from stateserver.protocol.stored_form import HEADER_BYTES


def stored_keys(keys: Sequence[bytes], key_groups: Sequence[int]) -> tuple[bytes, list[int]]:
    """``keys`` behind their key-group prefixes (``key_groups[i]`` is the key group of ``keys[i]``):
    (blob, lengths), exactly as ``stored_form.stored_keys`` packs them."""
    prefixes = map(KEY_GROUP_PREFIXES.__getitem__, key_groups)
    blob = b"".join(itertools.chain.from_iterable(zip(prefixes, keys)))
    return blob, list(map(operator.add, map(len, keys), itertools.repeat(KEY_GROUP_PREFIX_BYTES)))


_MAX_LENGTH = 1 << 12  # longer values are rare enough to be cut by stored_form's layouts

# Values of a read reply are cut by compiled ``struct`` layouts of ``_CHUNK`` items (and one of
# the remainder), per value length: a batch's count varies from reply to reply (a shard's part of
# a call), so a layout per count, as ``stored_form.plain_values`` caches them, is compiled again
# for most replies (about 1 ms per thousand values); these are compiled once per length.
_CHUNK = 64


@functools.lru_cache(maxsize=256)
def _without_headers(count: int, length: int) -> struct.Struct:
    return struct.Struct("<" + f"{HEADER_BYTES}x{length - HEADER_BYTES}s" * count)


def plain_values(blob: bytes, lengths: Sequence[int]) -> list[bytes]:
    """The values of a stored-form reply without their header bytes, as ``stored_form.plain_values``
    (ValueError when the lengths do not add up to the blob)."""
    lengths = list(lengths)  # a protobuf repeated field is iterated once, here
    count = len(lengths)
    if not count or lengths.count(lengths[0]) != count or not HEADER_BYTES <= lengths[0] <= _MAX_LENGTH:
        return stored_form.plain_values(blob, lengths)  # lengths of several sizes: a layout per reply
    length = lengths[0]
    if len(blob) != count * length:
        raise ValueError(f"lengths add up to {count * length} bytes but the blob has {len(blob)}")
    whole = count - count % _CHUNK
    view = memoryview(blob)  # cut without copying
    values = list(itertools.chain.from_iterable(_without_headers(_CHUNK, length).iter_unpack(view[:whole * length])))
    if whole < count:
        values += _without_headers(count - whole, length).unpack(view[whole * length:])
    return values

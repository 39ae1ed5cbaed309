"""Batches in stored form (protocol/stored_form.py): keys with their key-group prefix, values
with their header byte, checked over the packed blobs and handed to RocksDB as they came.

The common cases, puts to one value state and gets from one value or aggregating state without
TTL, run with little Python bytecode per key: key groups and headers are checked by one ``struct``
unpack each, and the write batch is filled by ``map`` over the sliced keys and values. Every other
batch is turned into the plain form and goes the usual way (``writes``, ``reads``).

Every write checks that each prefix is the key group the key hashes to, not only that it is inside
the shard: a key filed under another key group of the shard would, after a rescaling restore, sit
in another shard than the one its reads go to (silently lost; it costs ~0.1 µs a key). The read
fast path checks only the range: a forged prefix there finds nothing and changes nothing.
"""
from __future__ import annotations

import collections
import operator
from collections.abc import Sequence

import rocksdict

from stateserver.protocol import stored_form
from stateserver.protocol.errors import InvalidInput, KeyGroupOutOfRange
from stateserver.protocol.keygroups import KEY_GROUP_PREFIX_BYTES, key_groups_for
from stateserver.protocol.operations import Batch, ReadOp, WriteOp
from stateserver.protocol.states import StateKind
from stateserver.shard import layout
from stateserver.shard import reads
from stateserver.shard import writes
from stateserver.shard.session import Arrival
from stateserver.shard.shard import Shard


def check_key_groups(shard: Shard, blob: bytes, lengths: Sequence[int]) -> tuple[int, ...]:
    """The key groups of a blob of stored keys, each checked to be non-empty, within the size
    limit and inside the shard's range. ``lengths``: a list (a protobuf repeated field is slow to
    iterate, and is iterated several times here)."""
    if not lengths:
        return ()
    _check_key_lengths(shard, lengths)
    groups = stored_form.key_groups(blob, lengths)
    _check_range(shard, groups)
    return groups


def _check_key_lengths(shard: Shard, lengths: Sequence[int]) -> None:
    shortest, longest = min(lengths), max(lengths)
    if shortest <= KEY_GROUP_PREFIX_BYTES:
        index = list(lengths).index(shortest)
        raise InvalidInput(f"key {index} of the batch is empty or lacks its key-group prefix; a stored-form key is "
                           f"the key group (2 bytes) and a non-empty key")
    if longest - KEY_GROUP_PREFIX_BYTES > shard.limits.max_key_bytes:
        index = list(lengths).index(longest)
        raise InvalidInput(f"key {index} of the batch has {longest - KEY_GROUP_PREFIX_BYTES} bytes; the limit is "
                           f"{shard.limits.max_key_bytes}")


def _check_range(shard: Shard, groups: Sequence[int]) -> None:
    own = shard.key_groups
    if min(groups) < own.start or max(groups) > own.end:
        index = next(i for i, g in enumerate(groups) if g not in own)
        raise KeyGroupOutOfRange(f"key {index} of the batch is in key group {groups[index]}, outside shard {shard.id}")


def _check_hashes(shard: Shard, raw_keys: Sequence[bytes], groups: Sequence[int]) -> list[int]:
    """The key groups the keys hash to, checked to be their prefixes' (``groups``, checked to be
    the shard's already): the hashes alone, not ``key_groups_of``'s checks again."""
    computed = key_groups_for(raw_keys, shard.max_key_groups)
    if computed != list(groups):
        computed = shard.key_groups_of(raw_keys)  # a key hashing outside the shard is refused as such
        index = next(i for i, (a, b) in enumerate(zip(computed, groups)) if a != b)
        raise InvalidInput(f"key {index} of the batch has the prefix of key group {groups[index]} but hashes to "
                           f"key group {computed[index]}")
    return computed


# -- writes ------------------------------------------------------------------------------------


def apply_stored_write_batch(shard: Shard, batch: Batch, key_blob: bytes, key_lengths: Sequence[int],
                             value_blob: bytes, value_lengths: Sequence[int], *, epoch: int, sequence: int = 0,
                             arrival: Arrival | None = None) -> int:
    """``batch`` holds the stored keys and values as sliced from the blobs; ``key_lengths`` and
    ``value_lengths`` are lists."""
    with shard.turn(sequence, epoch, arrival):
        writes.check_batch_shape(batch, shard.limits.max_batch_ops)
        _check_key_lengths(shard, key_lengths)
        groups, raw_keys = stored_form.key_groups_and_raw_keys(key_blob, key_lengths)
        _check_range(shard, groups)
        _check_headers(shard, batch, value_blob, value_lengths)
        states = [shard.state(name) for name in batch.states]
        state = states[0]
        hashed_groups = _check_hashes(shard, raw_keys, groups)
        if (not batch.state_indexes and state.descriptor.kind is StateKind.VALUE and not state.descriptor.ttl_ms
                and batch.ops.count(WriteOp.PUT) == len(batch.ops)):
            stored = rocksdict.WriteBatch(raw_mode=True)
            stored.set_default_column_family(state.handle)
            collections.deque(map(stored.put, batch.keys, batch.values), maxlen=0)  # no bytecode per key
            shard.db.write(stored)
            return len(batch.ops)
        plain = Batch(ops=batch.ops, states=batch.states, state_indexes=batch.state_indexes, keys=raw_keys,
                      values=stored_form.plain_values(value_blob, value_lengths), map_keys=batch.map_keys)
        return writes._apply(shard, plain, hashed_groups)


def _check_headers(shard: Shard, batch: Batch, blob: bytes, lengths: Sequence[int]) -> None:
    if len(lengths) != len(batch.ops):
        raise InvalidInput(f"a stored-form batch has a value (at least its header) for every operation: "
                           f"{len(lengths)} values for {len(batch.ops)} operations")
    if max(lengths) - stored_form.HEADER_BYTES > shard.limits.max_value_bytes:
        index = list(lengths).index(max(lengths))
        raise InvalidInput(f"value {index} of the batch has {max(lengths) - stored_form.HEADER_BYTES} bytes; the "
                           f"limit is {shard.limits.max_value_bytes}")
    found = stored_form.headers(blob, lengths)  # ValueError (InvalidInput at the service) for an empty item
    if max(found) != 0:
        index = next(i for i, header in enumerate(found) if header)
        raise InvalidInput(f"value {index} of the batch has header 0x{found[index]:02x}; a stored-form value starts "
                           f"with 0x00")


# -- reads ---------------------------------------------------------------------------------------

_FIRST_BYTE = operator.itemgetter(slice(0, 1))


def read_stored_batch(shard: Shard, batch: Batch, key_blob: bytes, key_lengths: Sequence[int]) -> list[bytes | None]:
    """One result per read in stored form (the plain header, then the value), None where absent."""
    reads.check_read_shape(shard, batch)
    groups = check_key_groups(shard, key_blob, key_lengths)
    states = [shard.state(name) for name in batch.states]
    reads.check_read_ops(batch, states)
    state = states[0]
    if not batch.state_indexes and not state.descriptor.ttl_ms and batch.ops.count(ReadOp.GET) == len(batch.ops):
        found: list[bytes | None] = state.table[batch.keys]
        # Values written without TTL have the plain header: checked for all at once.
        if b"".join(map(_FIRST_BYTE, filter(None, found))).count(0) == len(found) - found.count(None):
            return reads._check_reply_size(shard, found)
        now = shard.clock()
        return reads._check_reply_size(shard, [_restored(layout.decode_value(v, now)) if v is not None else None
                                               for v in found])
    raw = stored_form.raw_keys(key_blob, key_lengths)
    plain = Batch(ops=batch.ops, states=batch.states, state_indexes=batch.state_indexes, keys=raw,
                  map_keys=batch.map_keys)
    results = reads.read_batch(shard, plain, _check_hashes(shard, raw, groups))
    return [_restored(value) for value in results]


def _restored(value: bytes | None) -> bytes | None:
    return None if value is None else layout.HEADER_PLAIN + value

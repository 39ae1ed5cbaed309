"""Applying a write batch to a shard: validate everything, then one atomic RocksDB write.

Nothing is written unless the whole batch is valid. Checks run over whole lists (this
is the hot path); a batch of plain puts to one value state skips the per-operation loop.
Merges fold every operand of the batch for a key in memory and write the key once;
list appends take positions from a cache of list tails, updated after the write.
"""
from __future__ import annotations

import rocksdict

from stateserver.shard import layout

from stateserver.protocol import merge_operators
from stateserver.protocol.errors import InvalidInput
from stateserver.protocol.keygroups import KEY_GROUP_PREFIXES
from stateserver.protocol.operations import Batch, WriteOp
from stateserver.shard.session import Arrival
from stateserver.shard.shard import OpenState, Shard
from stateserver.protocol.states import StateKind

_ALLOWED: dict[StateKind, frozenset[int]] = {
    StateKind.VALUE: frozenset({WriteOp.PUT, WriteOp.DELETE, WriteOp.CLEAR}),
    StateKind.AGGREGATING: frozenset({WriteOp.DELETE, WriteOp.MERGE, WriteOp.CLEAR}),
    StateKind.LIST: frozenset({WriteOp.LIST_APPEND, WriteOp.CLEAR}),
    StateKind.MAP: frozenset({WriteOp.MAP_PUT, WriteOp.MAP_REMOVE, WriteOp.CLEAR}),
}
_WITH_VALUE = frozenset({WriteOp.PUT, WriteOp.MERGE, WriteOp.LIST_APPEND, WriteOp.MAP_PUT})
_WITH_MAP_KEY = frozenset({WriteOp.MAP_PUT, WriteOp.MAP_REMOVE})
_MAX_CACHED_LIST_TAILS = 100_000

MergeSlots = dict[tuple[int, bytes], tuple[bytes | None, list[bytes]]]


def check_batch_shape(batch: Batch, max_ops: int) -> None:
    count = len(batch.ops)
    if count == 0:
        raise InvalidInput("the batch has no operations")
    if count > max_ops:
        raise InvalidInput(f"a batch of {count} operations exceeds the limit of {max_ops}")
    if not batch.states:
        raise InvalidInput("the batch names no state")
    if len(batch.keys) != count:
        raise InvalidInput(f"keys has {len(batch.keys)} entries for {count} operations")
    for name, field in (("state_indexes", batch.state_indexes), ("values", batch.values), ("map_keys", batch.map_keys)):
        if field and len(field) != count:
            raise InvalidInput(f"{name} has {len(field)} entries for {count} operations")
    if batch.state_indexes and max(batch.state_indexes) >= len(batch.states):
        raise InvalidInput(f"a state index is outside the {len(batch.states)} states named")


def _check_ops(batch: Batch, states: list[OpenState]) -> None:
    """Every operation must exist and apply to its state's kind, with the fields it needs."""
    pairs = set(zip(batch.ops, batch.state_indexes)) if batch.state_indexes else {(op, 0) for op in set(batch.ops)}
    for op, state_index in pairs:
        descriptor = states[state_index].descriptor
        if op not in _ALLOWED[descriptor.kind]:
            index = _first(batch, op, state_index)
            name = WriteOp(op).name if op in WriteOp._value2member_map_ else f"unknown operation {op}"
            raise InvalidInput(f"operation {index}: {name} does not apply to {descriptor.kind.name.lower()} state {descriptor.name!r}")
        if op in _WITH_VALUE and not batch.values:
            raise InvalidInput(f"operation {_first(batch, op, state_index)}: {WriteOp(op).name} needs a value")
        if op in _WITH_MAP_KEY:
            missing = not batch.map_keys or any(
                not batch.map_keys[i] for i, code in enumerate(batch.ops) if code == op
            )
            if missing:
                raise InvalidInput(f"operation {_first(batch, op, state_index)}: {WriteOp(op).name} needs a non-empty map key")
        if op == WriteOp.MERGE:
            operator = descriptor.merge_operator
            for i, code in enumerate(batch.ops):
                if code == op and (not batch.state_indexes or batch.state_indexes[i] == state_index):
                    try:
                        merge_operators.check_operand(operator, batch.values[i])
                    except ValueError as exc:
                        raise InvalidInput(f"operation {i}: {exc}") from None


def _first(batch: Batch, op: int, state_index: int) -> int:
    for i, code in enumerate(batch.ops):
        if code == op and (not batch.state_indexes or batch.state_indexes[i] == state_index):
            return i
    return 0


def apply_write_batch(shard: Shard, batch: Batch, *, epoch: int, sequence: int = 0,
                      arrival: Arrival | None = None) -> int:
    with shard.turn(sequence, epoch, arrival):
        return _apply(shard, batch)


def _apply(shard: Shard, batch: Batch, key_groups: list[int] | None = None) -> int:
    """``key_groups``: those of ``batch.keys``, when the caller checked them already."""
    check_batch_shape(batch, shard.limits.max_batch_ops)
    states = [shard.state(name) for name in batch.states]
    if key_groups is None:
        key_groups = shard.key_groups_of(batch.keys)
    shard.check_value_sizes(batch.values)
    shard.check_value_sizes(batch.map_keys, "map key")
    if batch.map_keys and max(map(len, batch.map_keys)) > shard.limits.max_key_bytes:
        raise InvalidInput(f"a map key exceeds the limit of {shard.limits.max_key_bytes} bytes")
    _check_ops(batch, states)
    if not batch.state_indexes and states[0].descriptor.kind is StateKind.VALUE and batch.ops.count(WriteOp.PUT) == len(batch.ops):
        _apply_puts(shard, states[0], key_groups, batch)
    else:
        _apply_mixed(shard, states, key_groups, batch)
    return len(batch.ops)


def _apply_puts(shard: Shard, state: OpenState, key_groups: list[int], batch: Batch) -> None:
    """The common case, a batch of puts to one value state, without a per-operation branch."""
    prefixes = KEY_GROUP_PREFIXES
    expiry = shard.expiry_for(state.descriptor)
    writes = rocksdict.WriteBatch(raw_mode=True)
    writes.set_default_column_family(state.handle)
    put = writes.put
    if expiry is None:
        header = layout.HEADER_PLAIN  # stored values are built in the loop: no list of them
        for key_group, key, value in zip(key_groups, batch.keys, batch.values):
            put(prefixes[key_group] + key, header + value)
    else:
        encode = layout.encode_value
        for key_group, key, value in zip(key_groups, batch.keys, batch.values):
            put(prefixes[key_group] + key, encode(value, expiry))
    shard.db.write(writes)


def _apply_mixed(shard: Shard, states: list[OpenState], key_groups: list[int], batch: Batch) -> None:
    writes = rocksdict.WriteBatch(raw_mode=True)
    merged: MergeSlots = {}  # (state, stored key) -> (value before the batch, operands to fold)
    tails: dict[tuple[str, bytes], int] = {}
    _load_merge_bases(shard, states, key_groups, batch, merged)
    expiries = [shard.expiry_for(s.descriptor) for s in states]
    values = batch.values or [b""] * len(batch.ops)
    map_keys = batch.map_keys or [b""] * len(batch.ops)
    state_indexes = batch.state_indexes or [0] * len(batch.ops)
    for op, state_index, key_group, key, value, map_key in zip(batch.ops, state_indexes, key_groups, batch.keys, values, map_keys):
        state = states[state_index]
        expiry = expiries[state_index]
        handle = state.handle
        kind = state.descriptor.kind
        if kind is StateKind.AGGREGATING:
            # Aggregates are written once, from `merged`, after every operation is folded.
            slot = (state_index, layout.value_key(key_group, key))
            if op == WriteOp.MERGE:
                merged[slot][1].append(value)
            else:
                merged[slot] = (None, [])
        elif kind is StateKind.VALUE:
            stored_key = layout.value_key(key_group, key)
            if op == WriteOp.PUT:
                writes.put(stored_key, layout.encode_value(value, expiry), handle)
            else:
                writes.delete(stored_key, handle)
        else:
            prefix = layout.composite_prefix(key_group, key)
            if op == WriteOp.CLEAR:
                writes.delete_range(prefix, layout.prefix_end(prefix), handle)
                if kind is StateKind.LIST:
                    tails[(state.descriptor.name, prefix)] = 0
            elif op == WriteOp.LIST_APPEND:
                position = _list_position(shard, state, prefix, tails)
                writes.put(prefix + layout.list_position(position), layout.encode_value(value, expiry), handle)
            elif op == WriteOp.MAP_PUT:
                writes.put(prefix + map_key, layout.encode_value(value, expiry), handle)
            else:
                writes.delete(prefix + map_key, handle)
    for (state_index, stored_key), (base, operands) in merged.items():
        result = base
        if operands:
            result = merge_operators.get_merge_operator(states[state_index].descriptor.merge_operator)(base, operands)
        if result is None:
            writes.delete(stored_key, states[state_index].handle)
        else:
            writes.put(stored_key, layout.encode_value(result, expiries[state_index]), states[state_index].handle)
    shard.db.write(writes)
    if len(shard.list_tails) + len(tails) > _MAX_CACHED_LIST_TAILS:
        shard.list_tails.clear()  # only a cache: positions are found again on disk
    shard.list_tails.update(tails)


def _load_merge_bases(shard: Shard, states: list[OpenState], key_groups: list[int], batch: Batch, merged: MergeSlots) -> None:
    """Read the current value of every key a merge folds into, one multi-get per state."""
    wanted: dict[int, dict[bytes, None]] = {}
    for i, op in enumerate(batch.ops):
        if op == WriteOp.MERGE:
            state_index = batch.state_indexes[i] if batch.state_indexes else 0
            wanted.setdefault(state_index, {})[layout.value_key(key_groups[i], batch.keys[i])] = None
    now = shard.clock()
    for state_index, keys in wanted.items():
        stored_keys = list(keys)
        for stored_key, stored in zip(stored_keys, states[state_index].table[stored_keys]):
            base = layout.decode_value(stored, now) if stored is not None else None
            merged[(state_index, stored_key)] = (base, [])


def _list_position(shard: Shard, state: OpenState, prefix: bytes, tails: dict[tuple[str, bytes], int]) -> int:
    """The next free position of a list: from this batch, the cache, or the last stored element."""
    tail_key = (state.descriptor.name, prefix)
    position = tails.get(tail_key)
    if position is None:
        position = shard.list_tails.get(tail_key)
    if position is None:
        position = 0
        iterator = state.table.iter()
        iterator.seek_for_prev(prefix + b"\xff" * layout.LIST_POSITION_BYTES)
        if iterator.valid():
            stored_key: bytes = iterator.key()
            if stored_key.startswith(prefix) and len(stored_key) == len(prefix) + layout.LIST_POSITION_BYTES:
                position = layout.decode_list_position(stored_key[len(prefix):]) + 1
    tails[tail_key] = position + 1
    return position

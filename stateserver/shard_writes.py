"""Applying a write batch to a shard: validate everything, then one atomic RocksDB write.

Nothing is written unless the whole batch is valid. Merges fold every operand of the
batch for a key in memory and write the key once; list appends take positions from a
cache of list tails, updated only after the write succeeded.
"""
from __future__ import annotations

import rocksdict

from stateserver import layout, merge_operators
from stateserver.errors import InvalidInput, KeyGroupOutOfRange
from stateserver.keygroups import key_group_for
from stateserver.operations import Batch, WriteOp
from stateserver.shard import OpenState, Shard
from stateserver.states import StateKind

_ALLOWED: dict[WriteOp, frozenset[StateKind]] = {
    WriteOp.PUT: frozenset({StateKind.VALUE}),
    WriteOp.DELETE: frozenset({StateKind.VALUE, StateKind.AGGREGATING}),
    WriteOp.MERGE: frozenset({StateKind.AGGREGATING}),
    WriteOp.LIST_APPEND: frozenset({StateKind.LIST}),
    WriteOp.MAP_PUT: frozenset({StateKind.MAP}),
    WriteOp.MAP_REMOVE: frozenset({StateKind.MAP}),
    WriteOp.CLEAR: frozenset(StateKind),
}
_WITH_VALUE = frozenset({WriteOp.PUT, WriteOp.MERGE, WriteOp.LIST_APPEND, WriteOp.MAP_PUT})
_WITH_MAP_KEY = frozenset({WriteOp.MAP_PUT, WriteOp.MAP_REMOVE})
_VALID_OPS = frozenset(int(op) for op in WriteOp)


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


def apply_write_batch(shard: Shard, batch: Batch) -> int:
    limits = shard.limits
    check_batch_shape(batch, limits.max_batch_ops)
    states = [shard.state(name) for name in batch.states]
    with shard.write_lock:
        writes = rocksdict.WriteBatch(raw_mode=True)
        # (state, stored key) -> (value before the batch's merges, operands to fold into it)
        merged: dict[tuple[int, bytes], tuple[bytes | None, list[bytes]]] = {}
        merge_reads: dict[tuple[int, bytes], None] = {}
        tails: dict[tuple[str, bytes], int] = {}
        plan = []
        for i, code in enumerate(batch.ops):
            if code not in _VALID_OPS:
                raise InvalidInput(f"operation {i}: unknown write operation {code}")
            op = WriteOp(code)
            state_index = batch.state_indexes[i] if batch.state_indexes else 0
            state = states[state_index]
            kind = state.descriptor.kind
            if kind not in _ALLOWED[op]:
                raise InvalidInput(f"operation {i}: {op.name} does not apply to {kind.name.lower()} state {state.descriptor.name!r}")
            key = batch.keys[i]
            shard.check_key(key)
            key_group = key_group_for(key, shard.max_key_groups)
            if key_group not in shard.key_groups:
                raise KeyGroupOutOfRange(
                    f"operation {i}: the key's key group {key_group} is outside shard {shard.id}"
                )
            value = batch.values[i] if batch.values else b""
            if op in _WITH_VALUE:
                if not batch.values:
                    raise InvalidInput(f"operation {i}: {op.name} needs a value")
                if len(value) > limits.max_value_bytes:
                    raise InvalidInput(f"operation {i}: a value of {len(value)} bytes exceeds the limit of {limits.max_value_bytes}")
            map_key = batch.map_keys[i] if batch.map_keys else b""
            if op in _WITH_MAP_KEY:
                if not batch.map_keys or not map_key:
                    raise InvalidInput(f"operation {i}: {op.name} needs a non-empty map key")
                if len(map_key) > limits.max_key_bytes:
                    raise InvalidInput(f"operation {i}: a map key of {len(map_key)} bytes exceeds the limit of {limits.max_key_bytes}")
            if op is WriteOp.MERGE:
                try:
                    merge_operators.check_operand(state.descriptor.merge_operator, value)
                except ValueError as exc:
                    raise InvalidInput(f"operation {i}: {exc}") from None
                merge_reads[(state_index, layout.value_key(key_group, key))] = None
            plan.append((op, state_index, state, key_group, key, value, map_key))

        _load_merge_bases(shard, states, merge_reads, merged)
        now_expiry = [shard.expiry_for(s.descriptor) for s in states]
        for op, state_index, state, key_group, key, value, map_key in plan:
            _add(shard, writes, op, state_index, state, key_group, key, value, map_key,
                 merged, tails, now_expiry[state_index])
        for (state_index, stored_key), (base, operands) in merged.items():
            handle = states[state_index].handle
            result = base
            if operands:
                fold = merge_operators.get_merge_operator(states[state_index].descriptor.merge_operator)
                result = fold(base, operands)
            if result is None:
                writes.delete(stored_key, handle)
            else:
                writes.put(stored_key, layout.encode_value(result, now_expiry[state_index]), handle)
        shard.db.write(writes)
        shard.list_tails.update(tails)
        if len(shard.list_tails) > 100_000:
            shard.list_tails.clear()  # a cache; positions are found again on disk
    return len(batch.ops)


def _load_merge_bases(
    shard: Shard,
    states: list[OpenState],
    wanted: dict[tuple[int, bytes], None],
    merged: dict[tuple[int, bytes], tuple[bytes | None, list[bytes]]],
) -> None:
    """Read the current value of every key a merge will fold into, one multi-get per state."""
    by_state: dict[int, list[bytes]] = {}
    for state_index, stored_key in wanted:
        by_state.setdefault(state_index, []).append(stored_key)
    now = shard.clock()
    for state_index, stored_keys in by_state.items():
        current = states[state_index].table[stored_keys]
        for stored_key, stored in zip(stored_keys, current):
            base = layout.decode_value(stored, now) if stored is not None else None
            merged[(state_index, stored_key)] = (base, [])


def _add(shard: Shard, writes: rocksdict.WriteBatch, op: WriteOp, state_index: int, state: OpenState,
         key_group: int, key: bytes, value: bytes, map_key: bytes,
         merged: dict[tuple[int, bytes], tuple[bytes | None, list[bytes]]], tails: dict[tuple[str, bytes], int],
         expiry: int | None) -> None:
    handle = state.handle
    kind = state.descriptor.kind
    if kind in (StateKind.VALUE, StateKind.AGGREGATING):
        stored_key = layout.value_key(key_group, key)
        if kind is StateKind.AGGREGATING:
            # Aggregates are written once, from `merged`, after every operation is folded.
            if op is WriteOp.MERGE:
                merged[(state_index, stored_key)][1].append(value)
            else:
                merged[(state_index, stored_key)] = (None, [])
        elif op is WriteOp.PUT:
            writes.put(stored_key, layout.encode_value(value, expiry), handle)
        else:
            writes.delete(stored_key, handle)
        return
    prefix = layout.composite_prefix(key_group, key)
    if op is WriteOp.CLEAR:
        writes.delete_range(prefix, layout.prefix_end(prefix), handle)
        if kind is StateKind.LIST:
            tails[(state.descriptor.name, prefix)] = 0
    elif op is WriteOp.LIST_APPEND:
        tail_key = (state.descriptor.name, prefix)
        position = tails.get(tail_key)
        if position is None:
            position = shard.list_tails.get(tail_key)
        if position is None:
            position = _next_list_position(state, prefix)
        writes.put(prefix + layout.list_position(position), layout.encode_value(value, expiry), handle)
        tails[tail_key] = position + 1
    elif op is WriteOp.MAP_PUT:
        writes.put(prefix + map_key, layout.encode_value(value, expiry), handle)
    else:
        writes.delete(prefix + map_key, handle)


def _next_list_position(state: OpenState, prefix: bytes) -> int:
    iterator = state.table.iter()
    iterator.seek_for_prev(prefix + b"\xff" * layout.LIST_POSITION_BYTES)
    if iterator.valid():
        stored_key: bytes = iterator.key()
        if stored_key.startswith(prefix) and len(stored_key) == len(prefix) + layout.LIST_POSITION_BYTES:
            return layout.decode_list_position(stored_key[len(prefix):]) + 1
    return 0

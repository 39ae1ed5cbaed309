"""Reading a shard: batched point reads (one multi-get per state) and paged iteration."""
from __future__ import annotations

import dataclasses

from stateserver.shard import layout

from stateserver.protocol import wire
from collections.abc import Sequence

from stateserver.protocol.errors import InvalidInput, ReplyTooLarge
from stateserver.protocol.keygroups import KEY_GROUP_PREFIXES as _KEY_GROUP_PREFIXES
from stateserver.protocol.operations import Batch, ReadOp
from stateserver.shard.shard import OpenState, Shard
from stateserver.protocol.states import StateKind

_ALLOWED: dict[ReadOp, frozenset[StateKind]] = {
    ReadOp.GET: frozenset({StateKind.VALUE, StateKind.AGGREGATING}),
    ReadOp.GET_LIST: frozenset({StateKind.LIST}),
    ReadOp.MAP_GET: frozenset({StateKind.MAP}),
    ReadOp.MAP_CONTAINS: frozenset({StateKind.MAP}),
}
_VALID_OPS = frozenset(int(op) for op in ReadOp)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    entry_keys: list[bytes]
    values: list[bytes]
    has_more: bool


def check_read_shape(shard: Shard, batch: Batch) -> None:
    count = len(batch.ops)
    if count == 0:
        raise InvalidInput("the batch has no reads")
    if count > shard.limits.max_batch_ops:
        raise InvalidInput(f"a batch of {count} reads exceeds the limit of {shard.limits.max_batch_ops}")
    if len(batch.keys) != count or (batch.state_indexes and len(batch.state_indexes) != count):
        raise InvalidInput(f"keys and state indexes must have one entry per read ({count})")
    if batch.map_keys and len(batch.map_keys) != count:
        raise InvalidInput(f"map_keys has {len(batch.map_keys)} entries for {count} reads")
    if not batch.states or (batch.state_indexes and max(batch.state_indexes) >= len(batch.states)):
        raise InvalidInput("a read refers to a state the batch does not name")


def check_read_ops(batch: Batch, states: list[OpenState]) -> None:
    """Every read's operation exists and applies to its state's kind."""
    state_indexes = batch.state_indexes or [0] * len(batch.ops)
    # The distinct (op, state) pairs, in order of first appearance; without state indexes from
    # the distinct ops alone, rather than a tuple per read.
    pairs = set(zip(batch.ops, state_indexes)) if batch.state_indexes else {(code, 0) for code in dict.fromkeys(batch.ops)}
    for code, state_index in pairs:
        kind = states[state_index].descriptor.kind
        if code not in _VALID_OPS or kind not in _ALLOWED[ReadOp(code)]:
            i = next(i for i, pair in enumerate(zip(batch.ops, state_indexes)) if pair == (code, state_index))
            name = ReadOp(code).name if code in _VALID_OPS else f"unknown read operation {code}"
            raise InvalidInput(f"read {i}: {name} does not apply to {kind.name.lower()} state {states[state_index].descriptor.name!r}")


def read_batch(shard: Shard, batch: Batch, key_groups: list[int] | None = None) -> list[bytes | None]:
    """One result per read, ``None`` where nothing is stored (``b""`` for a found MAP_CONTAINS).

    ``key_groups``: those of ``batch.keys``, when the caller checked them already."""
    check_read_shape(shard, batch)
    count = len(batch.ops)
    states = [shard.state(name) for name in batch.states]
    if key_groups is None:
        key_groups = shard.key_groups_of(batch.keys)
    check_read_ops(batch, states)
    state_indexes = batch.state_indexes or [0] * count
    if not batch.state_indexes and batch.ops.count(ReadOp.GET) == count:
        return _check_reply_size(shard, _get_values(shard, states[0], key_groups, batch.keys))
    # Point reads grouped per state for one multi-get each; whole lists read one by one.
    point_reads: dict[int, tuple[list[int], list[bytes]]] = {}
    list_reads: list[tuple[int, OpenState, bytes]] = []
    for i, (code, state_index, key_group, key) in enumerate(zip(batch.ops, state_indexes, key_groups, batch.keys)):
        op = ReadOp(code)
        state = states[state_index]
        if op is ReadOp.GET:
            stored_key = layout.value_key(key_group, key)
        elif op is ReadOp.GET_LIST:
            list_reads.append((i, state, layout.composite_prefix(key_group, key)))
            continue
        else:
            map_key = batch.map_keys[i] if batch.map_keys else b""
            if not map_key:
                raise InvalidInput(f"read {i}: {op.name} needs a non-empty map key")
            stored_key = layout.composite_prefix(key_group, key) + map_key
        indexes, stored_keys = point_reads.setdefault(state_index, ([], []))
        indexes.append(i)
        stored_keys.append(stored_key)

    results: list[bytes | None] = [None] * count
    now = shard.clock()
    for state_index, (indexes, stored_keys) in point_reads.items():
        found = states[state_index].table[stored_keys]
        for i, stored in zip(indexes, found):
            if stored is not None:
                value = layout.decode_value(stored, now)
                if value is not None and batch.ops[i] == ReadOp.MAP_CONTAINS:
                    value = b""
                results[i] = value
    budget = shard.limits.max_read_reply_bytes
    for i, state, prefix in list_reads:
        elements = _scan(state, prefix, None, now, limit=None, budget=budget).values
        results[i] = wire.pack_list(elements) if elements else None
    return _check_reply_size(shard, results)


def _check_reply_size(shard: Shard, results: list[bytes | None]) -> list[bytes | None]:
    """Refuse reads whose values would not fit into one reply (gRPC would fail it as RESOURCE_EXHAUSTED)."""
    size = sum(map(len, filter(None, results)))
    if size > shard.limits.max_read_reply_bytes:
        raise ReplyTooLarge(f"the values of these {len(results)} reads add up to {size} bytes, more than a reply "
                            f"holds ({shard.limits.max_read_reply_bytes}); read fewer keys at once")
    return results


def _get_values(shard: Shard, state: OpenState, key_groups: list[int], keys: Sequence[bytes]) -> list[bytes | None]:
    """The common case, a batch of gets from one state, as one multi-get."""
    prefixes = _KEY_GROUP_PREFIXES
    found = state.table[[prefixes[g] + k for g, k in zip(key_groups, keys)]]
    now = shard.clock()
    decode = layout.decode_value
    # Slicing off a plain header is the common case; anything else goes through decode_value.
    return [
        (stored[1:] if stored[0] == 0 else decode(stored, now)) if stored is not None else None for stored in found
    ]


def iterate(shard: Shard, state_name: str, key: bytes, start_after: bytes | None, limit: int) -> Page:
    state = shard.state(state_name)
    if state.descriptor.kind not in (StateKind.MAP, StateKind.LIST):
        raise InvalidInput(f"state {state_name!r} is {state.descriptor.kind.name.lower()} state; only map and list state iterate")
    if not 0 < limit <= shard.limits.max_iterate_page:
        raise InvalidInput(f"page limit must be 1..{shard.limits.max_iterate_page}, got {limit}")
    prefix = layout.composite_prefix(shard.key_groups_of([key])[0], key)
    return _scan(state, prefix, start_after, shard.clock(), limit=limit, budget=shard.limits.max_read_reply_bytes)


def _scan(state: OpenState, prefix: bytes, start_after: bytes | None, now: int, *, limit: int | None, budget: int) -> Page:
    iterator = state.table.iter()
    iterator.seek(prefix + start_after if start_after is not None else prefix)
    entry_keys: list[bytes] = []
    values: list[bytes] = []
    size = 0
    prefix_length = len(prefix)
    while iterator.valid():
        stored_key: bytes = iterator.key()
        if not stored_key.startswith(prefix):
            return Page(entry_keys, values, has_more=False)
        entry_key = stored_key[prefix_length:]
        if start_after is not None and entry_key == start_after:
            iterator.next()
            continue
        value = layout.decode_value(iterator.value(), now)
        if value is not None:
            if (limit is not None and len(values) >= limit) or size + len(value) > budget:
                if limit is None:
                    raise InvalidInput(f"the list is larger than {budget} bytes; read it in pages with Iterate")
                return Page(entry_keys, values, has_more=True)
            entry_keys.append(entry_key)
            values.append(value)
            size += len(value) + len(entry_key)
        iterator.next()
    return Page(entry_keys, values, has_more=False)

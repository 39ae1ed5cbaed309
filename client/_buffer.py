"""A shard's write buffer and the overlay that lets a writer read its own buffered writes.

Sans-I/O: the sync and asyncio clients both use it. Operations are kept in order and
packed into one WriteBatchRequest; the overlay records, per (state, key), what the
buffered operations do, so a read can be answered by combining the node's answer
with what is still buffered (as the node would combine them after the flush).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from stateserver.client import _packing as packing
from stateserver.client._node_limits import OVERHEAD_PER_OP
from stateserver.protocol import merge_operators
from stateserver.protocol import stored_form
from stateserver.protocol import wire
from stateserver.protocol.operations import WriteOp
from stateserver.protocol.v1 import state_pb2 as pb

@dataclasses.dataclass(slots=True)
class ValueOverlay:
    value: bytes | None  # None: deleted


@dataclasses.dataclass(slots=True)
class AggregateOverlay:
    base_known: bool  # cleared in the buffer, so the node's value does not count
    operands: list[bytes]


@dataclasses.dataclass(slots=True)
class ListOverlay:
    cleared: bool
    appended: list[bytes]


@dataclasses.dataclass(slots=True)
class MapOverlay:
    cleared: bool
    entries: dict[bytes, bytes | None]  # None: removed


Overlay = ValueOverlay | AggregateOverlay | ListOverlay | MapOverlay


class WriteBuffer:
    """Buffered operations, in order. Adding is a few list appends; the overlay that
    answers reads is built lazily, from the operations added since the last read."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.ops = bytearray()
        self.state_names: list[str] = []
        self._state_index: dict[str, int] = {}
        self.state_indexes: list[int] = []
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.map_keys: list[bytes] = []
        # The key group of every key, as the router computed it to find the shard; None once an
        # operation came without one (the keys are then hashed again for the stored form).
        self.key_groups: list[int] | None = []
        self.has_map_keys = False
        self.byte_size = 0
        self._overlay: dict[tuple[str, bytes], Overlay] = {}
        self._indexed = 0  # operations [0, _indexed) are in the overlay

    def __len__(self) -> int:
        return len(self.ops)

    def _state(self, state: str) -> int:
        index = self._state_index.get(state)
        if index is None:
            index = self._state_index[state] = len(self.state_names)
            self.state_names.append(state)
        return index

    def add(self, op: WriteOp, state: str, key: bytes, value: bytes = b"", map_key: bytes = b"",
            key_group: int | None = None) -> None:
        if self.key_groups is not None:
            if key_group is None:
                self.key_groups = None
            else:
                self.key_groups.append(key_group)
        self.ops.append(op)
        self.state_indexes.append(self._state(state))
        self.keys.append(key)
        self.values.append(value)
        self.map_keys.append(map_key)
        self.has_map_keys = self.has_map_keys or bool(map_key)
        self.byte_size += len(key) + len(value) + len(map_key) + OVERHEAD_PER_OP

    def add_many(self, op: WriteOp, state: str, keys: Sequence[bytes], values: Sequence[bytes],
                 key_groups: Sequence[int] | None = None, byte_size: int | None = None) -> None:
        """Operations without map keys, in bulk; ``byte_size`` is what they add to ``byte_size``
        when the caller counted it already."""
        count = len(keys)
        if self.key_groups is not None:
            if key_groups is None:
                self.key_groups = None
            else:
                self.key_groups.extend(key_groups)
        self.ops.extend(bytes([op]) * count)
        self.state_indexes.extend([self._state(state)] * count)
        self.keys.extend(keys)
        self.values.extend(values)
        self.map_keys.extend([b""] * count)
        if byte_size is None:
            byte_size = sum(map(len, keys)) + sum(map(len, values)) + OVERHEAD_PER_OP * count
        self.byte_size += byte_size

    def overlay(self, state: str, key: bytes) -> Overlay | None:
        """What the buffered operations do to ``key`` of ``state``, or None if nothing."""
        if self._indexed < len(self.ops):
            for i in range(self._indexed, len(self.ops)):
                self._record(WriteOp(self.ops[i]), self.state_names[self.state_indexes[i]], self.keys[i],
                             self.values[i], self.map_keys[i])
            self._indexed = len(self.ops)
        return self._overlay.get((state, key))

    def _record(self, op: WriteOp, state: str, key: bytes, value: bytes, map_key: bytes) -> None:
        slot = (state, key)
        current = self._overlay.get(slot)
        # A DELETE or CLEAR seen before the handle's kind is known leaves ValueOverlay(None).
        cleared = isinstance(current, ValueOverlay) and current.value is None
        if op is WriteOp.PUT:
            self._overlay[slot] = ValueOverlay(value)
        elif op is WriteOp.MERGE:
            if isinstance(current, AggregateOverlay):
                current.operands.append(value)
            else:
                self._overlay[slot] = AggregateOverlay(cleared, [value])
        elif op is WriteOp.LIST_APPEND:
            if isinstance(current, ListOverlay):
                current.appended.append(value)
            else:
                self._overlay[slot] = ListOverlay(cleared, [value])
        elif op in (WriteOp.MAP_PUT, WriteOp.MAP_REMOVE):
            if not isinstance(current, MapOverlay):
                current = self._overlay[slot] = MapOverlay(cleared, {})
            current.entries[map_key] = value if op is WriteOp.MAP_PUT else None
        else:  # DELETE, CLEAR: the key's state starts empty from here on
            self._overlay[slot] = _cleared(current)

    def to_request(self, shard: pb.ShardRef, max_key_groups: int | None = None) -> pb.WriteBatchRequest:
        """The batch as one request; in stored form (the node's layout, less work for it) when
        ``max_key_groups`` is given."""
        if max_key_groups:
            if self.key_groups is not None:  # hashed once, by the router
                keys, key_lengths = packing.stored_keys(self.keys, self.key_groups)
            else:
                keys, key_lengths = stored_form.stored_keys(self.keys, max_key_groups)
            values, value_lengths = stored_form.stored_values(self.values)
        else:
            keys, key_lengths = wire.pack(self.keys)
            values, value_lengths = wire.pack(self.values)
        request = pb.WriteBatchRequest(
            shard=shard, states=self.state_names, ops=bytes(self.ops), keys=keys, key_lengths=key_lengths,
            values=values, value_lengths=value_lengths, stored_form=bool(max_key_groups),
        )
        if len(self.state_names) > 1:
            request.state_indexes.extend(self.state_indexes)
        if self.has_map_keys:
            map_keys, map_key_lengths = wire.pack(self.map_keys)
            request.map_keys = map_keys
            request.map_key_lengths.extend(map_key_lengths)
        return request


def read_request(shard: pb.ShardRef, states: Sequence[str], ops: bytes, keys: Sequence[bytes],
                 map_keys: Sequence[bytes] = (), state_indexes: Sequence[int] = (),
                 max_key_groups: int | None = None, key_groups: Sequence[int] | None = None) -> pb.ReadBatchRequest:
    """A packed ReadBatchRequest: one op per key; ``state_indexes`` empty when all read states[0];
    keys in stored form when ``max_key_groups`` is given (prefixed with ``key_groups``, the keys'
    key groups, when the caller knows them)."""
    if max_key_groups and key_groups is not None:
        packed_keys, key_lengths = packing.stored_keys(keys, key_groups)
    elif max_key_groups:
        packed_keys, key_lengths = stored_form.stored_keys(keys, max_key_groups)
    else:
        packed_keys, key_lengths = wire.pack(keys)
    request = pb.ReadBatchRequest(shard=shard, states=states, ops=ops, keys=packed_keys, key_lengths=key_lengths,
                                  stored_form=bool(max_key_groups))
    if state_indexes:
        request.state_indexes.extend(state_indexes)
    if map_keys:
        request.map_keys, lengths = wire.pack(map_keys)
        request.map_key_lengths.extend(lengths)
    return request


def read_results(reply: pb.ReadBatchResponse) -> list[bytes | None]:
    """The values of a ReadBatchResponse in request order, None where absent."""
    if reply.stored_form:  # each value behind its header byte: stripped as it is sliced, in C
        values = packing.plain_values(reply.values, reply.value_lengths)
    else:
        values = wire.unpack(reply.values, reply.value_lengths)
    found = reply.found
    if len(found) == len(values) and 0 not in found:  # every key found: the values as they are
        return values  # type: ignore[return-value]
    return [value if flag else None for value, flag in zip(values, found)]


def _cleared(current: Overlay | None) -> Overlay:
    if isinstance(current, AggregateOverlay):
        return AggregateOverlay(True, [])
    if isinstance(current, ListOverlay):
        return ListOverlay(True, [])
    if isinstance(current, MapOverlay):
        return MapOverlay(True, {})
    return ValueOverlay(None)


# -- combining the node's answer with the overlay ------------------------------------------


def resolve_value(overlay: Overlay | None, fetch: Callable[[], bytes | None], merge_operator: str = "") -> bytes | None:
    """A value or aggregate as it will be once the buffer is flushed."""
    if isinstance(overlay, ValueOverlay):
        return overlay.value
    if isinstance(overlay, AggregateOverlay):
        base = None if overlay.base_known else fetch()
        if not overlay.operands:
            return base
        return merge_operators.get_merge_operator(merge_operator)(base, overlay.operands)
    return fetch()


def resolve_list(overlay: Overlay | None, fetch: Callable[[], Sequence[bytes]]) -> list[bytes]:
    if isinstance(overlay, ListOverlay):
        base = [] if overlay.cleared else list(fetch())
        return base + overlay.appended
    if isinstance(overlay, ValueOverlay):  # cleared
        return []
    return list(fetch())


def resolve_map_entry(overlay: Overlay | None, map_key: bytes, fetch: Callable[[], bytes | None]) -> bytes | None:
    if isinstance(overlay, MapOverlay):
        if map_key in overlay.entries:
            return overlay.entries[map_key]
        if overlay.cleared:
            return None
    elif isinstance(overlay, ValueOverlay):  # cleared
        return None
    return fetch()

"""State handles (value, list, map, aggregating state of one writer), written once for both faces.

A handle encodes keys and values, routes each key to its shard session and hands the session the
operation, or hands the writer a read with the function that decodes its answer. What comes back
is the face's: the sync writer's sessions return nothing and its reads return values; the asyncio
writer's return awaitables (a completed one when nothing has to wait). Per-key work is the same
plain Python for both faces: no coroutine, task or future per key.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from stateserver.client._errors import InvalidArgumentError
from stateserver.client._positions import picked
from stateserver.client._serializers import INT64, BytesSerializer, Serializer
from stateserver.protocol import wire
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.states import StateDescriptor

K = TypeVar("K")
V = TypeVar("V")
MK = TypeVar("MK")
_JUST_BYTES = {bytes}
Values = list[Any]  # a read's answers in the order of its keys: bytes or None (a list for GET_LIST)


class HandleOwner(Protocol):
    """The writer as its handles see it (either face)."""

    def session_for(self, raw_key: bytes) -> Any: ...
    def split(self, raw_keys: Sequence[bytes]) -> list[tuple[Any, list[int] | None, list[int]]]: ...
    def read(self, op: ReadOp, state: str, keys: Sequence[bytes], map_keys: Sequence[bytes], merge_operator: str,
             finish: Callable[[Values], Any]) -> Any: ...
    def join(self, outcomes: list[Any]) -> Any: ...


class _Handle(Generic[K]):
    def __init__(self, writer: HandleOwner, descriptor: StateDescriptor, key_serializer: Serializer[K]) -> None:
        self._writer = writer
        self.descriptor = descriptor
        self.name = descriptor.name
        self._keys = key_serializer

    def _route(self, key: K) -> tuple[Any, bytes]:
        raw = self._keys.dumps(key)
        return self._writer.session_for(raw), raw

    def _raw_keys(self, keys: Iterable[K]) -> list[bytes]:
        if type(self._keys) is BytesSerializer:
            keys = keys if isinstance(keys, list) else list(keys)
            if set(map(type, keys)) <= _JUST_BYTES:  # dumps would return each key as it is
                return keys  # type: ignore[return-value]
            # BytesSerializer.dumps is bytes() for what it takes: called directly, without a Python frame per key.
            if not all(map(isinstance, keys, itertools.repeat((bytes, bytearray, memoryview)))):
                return list(map(self._keys.dumps, keys))  # raises its error for what it does not take
            return list(map(bytes, keys))
        return list(map(self._keys.dumps, keys))

    def _read(self, op: ReadOp, raws: Sequence[bytes], finish: Callable[[Values], Any],
              map_keys: Sequence[bytes] = ()) -> Any:
        return self._writer.read(op, self.name, raws, map_keys, self.descriptor.merge_operator, finish)

    def clear(self, key: K) -> Any:
        """Remove everything this state stores for ``key``."""
        session, raw = self._route(key)
        return session.add(WriteOp.CLEAR, self.name, raw)


class _WithValues(_Handle[K], Generic[K, V]):
    def __init__(self, writer: HandleOwner, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._values = value_serializer

    def _write(self, op: WriteOp, key: K, value: V) -> Any:
        session, raw = self._route(key)
        return session.add(op, self.name, raw, self._values.dumps(value))


class ValueState(_WithValues[K, V], Generic[K, V]):
    def put(self, key: K, value: V) -> Any:
        return self._write(WriteOp.PUT, key, value)

    def put_many(self, items: Iterable[tuple[K, V]] | Mapping[K, V]) -> Any:
        if isinstance(items, Mapping):  # keys and values in the same order, without a tuple per pair
            keys, objects = list(items.keys()), list(items.values())
        else:
            pairs = list(items)
            keys, objects = (list(zip(*pairs)) or [(), ()])  # type: ignore[assignment]
        if not keys:
            return self._writer.join([])
        raws = self._raw_keys(keys)
        values = objects if isinstance(self._values, BytesSerializer) else list(map(self._values.dumps, objects))
        groups = [(session, picked(raws, chosen), picked(values, chosen), key_groups)
                  for session, chosen, key_groups in self._writer.split(raws)]
        for session, group_keys, group_values, _ in groups:  # every item checked before any is buffered
            session.node_limits.check_writes(group_keys, group_values)
        return self._writer.join([session.add_many(WriteOp.PUT, self.name, group_keys, group_values, key_groups,
                                                   checked=True)
                                  for session, group_keys, group_values, key_groups in groups])

    def delete(self, key: K) -> Any:
        session, raw = self._route(key)
        return session.add(WriteOp.DELETE, self.name, raw)

    def get(self, key: K, default: V | None = None) -> Any:
        if default is None:  # no function made per call: many gets may wait at once (asyncio)
            return self._read(ReadOp.GET, [self._keys.dumps(key)], self._first)
        return self._read(ReadOp.GET, [self._keys.dumps(key)], lambda values: self._load(values, default)[0])

    def _first(self, fetched: Values) -> V | None:
        value = fetched[0]
        return None if value is None else self._values.loads(value)

    def get_many(self, keys: Sequence[K], default: V | None = None) -> Any:
        return self._read(ReadOp.GET, self._raw_keys(keys), lambda values: self._load(values, default))

    def _load(self, fetched: Values, default: V | None) -> list[V | None]:
        if default is None and type(self._values) is BytesSerializer:
            return fetched  # loads is the identity and absent values stay None
        loads = self._values.loads
        return [loads(value) if value is not None else default for value in fetched]


class AggregatingState(_Handle[K], Generic[K, V]):
    """State folded on the node by a named merge operator (``sum_int64``, ``list_append``, ...)."""

    def __init__(self, writer: HandleOwner, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 operand_serializer: Serializer[Any]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._operands = operand_serializer
        self._is_list = descriptor.merge_operator == "list_append"

    def merge(self, key: K, operand: Any) -> Any:
        session, raw = self._route(key)
        return session.add(WriteOp.MERGE, self.name, raw, self._operands.dumps(operand))

    def merge_many(self, items: Iterable[tuple[K, Any]]) -> Any:
        routed = [(*self._route(key), self._operands.dumps(operand)) for key, operand in items]
        for session, raw, operand in routed:  # every item checked before any is buffered
            session.node_limits.check_write(raw, operand)
        return self._writer.join([session.add(WriteOp.MERGE, self.name, raw, operand) for session, raw, operand in routed])

    def get(self, key: K) -> Any:
        return self._read(ReadOp.GET, [self._keys.dumps(key)], lambda values: self._decode_all(values)[0])

    def get_many(self, keys: Sequence[K]) -> Any:
        return self._read(ReadOp.GET, self._raw_keys(keys), self._decode_all)

    def _decode_all(self, fetched: Values) -> list[V | None]:
        return [None if value is None else self._decode(value) for value in fetched]

    def _decode(self, value: bytes) -> Any:
        if self._is_list:
            return [self._operands.loads(e) for e in wire.unpack_list(value)]
        return self._operands.loads(value)


class ListState(_WithValues[K, V], Generic[K, V]):
    def add(self, key: K, value: V) -> Any:
        return self._write(WriteOp.LIST_APPEND, key, value)

    def add_all(self, key: K, values: Iterable[V]) -> Any:
        return self._append(key, values, clear=False)

    def update(self, key: K, values: Iterable[V]) -> Any:
        """Replace the whole list."""
        return self._append(key, values, clear=True)

    def _append(self, key: K, values: Iterable[V], *, clear: bool) -> Any:
        session, raw = self._route(key)
        encoded = [self._values.dumps(value) for value in values]
        session.node_limits.check_writes([raw] * len(encoded), encoded)  # all checked before any is buffered
        outcomes = [session.add(WriteOp.CLEAR, self.name, raw)] if clear else []
        outcomes += [session.add(WriteOp.LIST_APPEND, self.name, raw, value) for value in encoded]
        return self._writer.join(outcomes)

    def get(self, key: K) -> Any:
        return self._read(ReadOp.GET_LIST, [self._keys.dumps(key)],
                          lambda values: [self._values.loads(element) for element in values[0]])


class MapState(_Handle[K], Generic[K, MK, V]):
    def __init__(self, writer: HandleOwner, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 map_key_serializer: Serializer[MK], value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._map_keys = map_key_serializer
        self._values = value_serializer

    def put(self, key: K, map_key: MK, value: V) -> Any:
        session, raw = self._route(key)
        return session.add(WriteOp.MAP_PUT, self.name, raw, self._values.dumps(value), self._map_keys.dumps(map_key))

    def put_all(self, key: K, entries: Mapping[MK, V]) -> Any:
        session, raw = self._route(key)
        encoded = [(self._map_keys.dumps(map_key), self._values.dumps(value)) for map_key, value in entries.items()]
        for map_key, value in encoded:  # every entry checked before any is buffered
            session.node_limits.check_write(raw, value, map_key, needs_map_key=True)
        return self._writer.join([session.add(WriteOp.MAP_PUT, self.name, raw, value, map_key)
                                  for map_key, value in encoded])

    def remove(self, key: K, map_key: MK) -> Any:
        session, raw = self._route(key)
        return session.add(WriteOp.MAP_REMOVE, self.name, raw, b"", self._map_keys.dumps(map_key))

    def get(self, key: K, map_key: MK, default: V | None = None) -> Any:
        def load(values: Values) -> V | None:
            return self._values.loads(values[0]) if values[0] is not None else default

        return self._read(ReadOp.MAP_GET, [self._keys.dumps(key)], load, [self._map_keys.dumps(map_key)])

    def contains(self, key: K, map_key: MK) -> Any:
        return self._read(ReadOp.MAP_CONTAINS, [self._keys.dumps(key)], lambda values: values[0] is not None,
                          [self._map_keys.dumps(map_key)])


def operand_serializer_for(merge_operator: str, element_serializer: Serializer[Any] | None) -> Serializer[Any]:
    if merge_operator.endswith("_int64"):
        return INT64
    if element_serializer is None:
        raise InvalidArgumentError(f"merge operator {merge_operator!r} needs an element serializer")
    return element_serializer

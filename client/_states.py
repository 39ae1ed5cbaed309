"""State handles: value, list, map and aggregating state of one writer.

Writes are buffered per shard and flushed in batches; reads combine the node's answer
with the writer's buffered writes, so a writer always reads its own writes.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from stateserver.client._buffer import Overlay, resolve_list, resolve_map_entry, resolve_value
from stateserver.client._connection import PendingCall
from stateserver.client._errors import InvalidArgumentError
from stateserver.client._serializers import INT64, BytesSerializer, Serializer
from stateserver.client._shard_session import ShardSession, finish_read, read_batch_size
from stateserver.protocol import wire
from stateserver.protocol.errors import ReplyTooLarge
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.states import StateDescriptor

if TYPE_CHECKING:
    from stateserver.client._writer import Writer

K = TypeVar("K")
V = TypeVar("V")
MK = TypeVar("MK")


class _Handle(Generic[K]):
    def __init__(self, writer: Writer, descriptor: StateDescriptor, key_serializer: Serializer[K]) -> None:
        self._writer = writer
        self.descriptor = descriptor
        self.name = descriptor.name
        self._keys = key_serializer

    def _route(self, key: K) -> tuple[ShardSession, bytes]:
        raw = self._keys.dumps(key)
        return self._writer.session_for(raw), raw

    def clear(self, key: K) -> None:
        """Remove everything this state stores for ``key``."""
        session, raw = self._route(key)
        session.add(WriteOp.CLEAR, self.name, raw)

    def _read_many(self, op: ReadOp, keys: Sequence[bytes]) -> list[bytes | None]:
        """Stored values as they will be once buffered writes are flushed, in the order of ``keys``.

        Reads go out in batches, all in flight at once, so that the node serves them on several
        threads: a large read in ``max_in_flight`` batches of ``max_ops`` to ``max_ops_when_busy``
        reads each, since the node's cost per batch is a third of a 1000-read batch's.
        """
        results: list[bytes | None] = [None] * len(keys)
        pending = []
        for session, indexes in self._writer.group_by_session(keys):
            chosen = keys if indexes is None else [keys[i] for i in indexes]
            positions = range(len(keys)) if indexes is None else indexes
            step = read_batch_size(len(chosen), session.limits)
            for start in range(0, len(chosen), step):
                call = session.start_read(self.name, op, chosen[start : start + step])
                pending.append((positions[start : start + step], call, session, chosen[start : start + step]))
        for positions, call, session, chunk in pending:
            fetched = self._finish_or_split(op, session, chunk, call)
            if len(session.buffer):
                fetched = [self._resolve(session.buffer.overlay(self.name, raw), stored) for raw, stored in zip(chunk, fetched)]
            if isinstance(positions, range) and len(positions) == len(fetched):  # one shard: a run of positions
                results[positions.start : positions.stop] = fetched
            else:
                for i, value in zip(positions, fetched):
                    results[i] = value
        return results

    def _finish_or_split(self, op: ReadOp, session: ShardSession, chunk: Sequence[bytes],
                         call: PendingCall[Any]) -> list[bytes | None]:
        """The chunk's stored values; a chunk whose values do not fit into one reply is read in halves."""
        try:
            return finish_read(call)
        except InvalidArgumentError as exc:
            if exc.reason != ReplyTooLarge.reason or len(chunk) == 1:
                raise
        halves = (chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :])
        return [value for half in halves
                for value in self._finish_or_split(op, session, half, session.start_read(self.name, op, half))]

    def _resolve(self, overlay: Overlay | None, stored: bytes | None) -> bytes | None:
        return resolve_value(overlay, lambda: stored, self.descriptor.merge_operator)


class ValueState(_Handle[K], Generic[K, V]):
    def __init__(self, writer: Writer, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._values = value_serializer

    def put(self, key: K, value: V) -> None:
        session, raw = self._route(key)
        session.add(WriteOp.PUT, self.name, raw, self._values.dumps(value))

    def put_many(self, items: Iterable[tuple[K, V]] | Mapping[K, V]) -> None:
        if isinstance(items, Mapping):  # keys and values in the same order, without a tuple per pair
            if not items:
                return
            keys, objects = list(items.keys()), list(items.values())
        else:
            pairs = list(items)
            if not pairs:
                return
            keys, objects = zip(*pairs)
        raws = _dump_all(self._keys, keys)
        values = _dump_all(self._values, objects)
        groups = [(session, raws, values) if indexes is None else
                  (session, [raws[i] for i in indexes], [values[i] for i in indexes])
                  for session, indexes in self._writer.group_by_session(raws)]
        for session, group_keys, group_values in groups:  # every item checked before any is buffered
            session.node_limits.check_writes(group_keys, group_values)
        for session, group_keys, group_values in groups:
            session.add_many(WriteOp.PUT, self.name, group_keys, group_values)

    def delete(self, key: K) -> None:
        session, raw = self._route(key)
        session.add(WriteOp.DELETE, self.name, raw)

    def get(self, key: K, default: V | None = None) -> V | None:
        return self.get_many([key], default)[0]

    def get_many(self, keys: Sequence[K], default: V | None = None) -> list[V | None]:
        # BytesSerializer.dumps is bytes(): called directly, without a Python frame per key.
        dumps = bytes if type(self._keys) is BytesSerializer else self._keys.dumps
        fetched = self._read_many(ReadOp.GET, list(map(dumps, keys)))
        if default is None and type(self._values) is BytesSerializer:
            return fetched  # loads is the identity and absent values stay None
        loads = self._values.loads
        return [loads(value) if value is not None else default for value in fetched]


class AggregatingState(_Handle[K], Generic[K, V]):
    """State folded on the node by a named merge operator (``sum_int64``, ``list_append``, ...)."""

    def __init__(self, writer: Writer, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 operand_serializer: Serializer[Any]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._operands = operand_serializer
        self._is_list = descriptor.merge_operator == "list_append"

    def merge(self, key: K, operand: Any) -> None:
        session, raw = self._route(key)
        session.add(WriteOp.MERGE, self.name, raw, self._operands.dumps(operand))

    def merge_many(self, items: Iterable[tuple[K, Any]]) -> None:
        routed = [(*self._route(key), self._operands.dumps(operand)) for key, operand in items]
        for session, raw, operand in routed:  # every item checked before any is buffered
            session.node_limits.check_write(raw, operand)
        for session, raw, operand in routed:
            session.add(WriteOp.MERGE, self.name, raw, operand)

    def get(self, key: K) -> V | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[K]) -> list[V | None]:
        fetched = self._read_many(ReadOp.GET, [self._keys.dumps(key) for key in keys])
        return [None if value is None else self._decode(value) for value in fetched]

    def _decode(self, value: bytes) -> Any:
        if self._is_list:
            return [self._operands.loads(e) for e in wire.unpack_list(value)]
        return self._operands.loads(value)


class ListState(_Handle[K], Generic[K, V]):
    def __init__(self, writer: Writer, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._values = value_serializer

    def add(self, key: K, value: V) -> None:
        session, raw = self._route(key)
        session.add(WriteOp.LIST_APPEND, self.name, raw, self._values.dumps(value))

    def add_all(self, key: K, values: Iterable[V]) -> None:
        self._append(key, values, clear=False)

    def update(self, key: K, values: Iterable[V]) -> None:
        """Replace the whole list."""
        self._append(key, values, clear=True)

    def _append(self, key: K, values: Iterable[V], *, clear: bool) -> None:
        session, raw = self._route(key)
        encoded = [self._values.dumps(value) for value in values]
        session.node_limits.check_writes([raw] * len(encoded), encoded)  # all checked before any is buffered
        if clear:
            session.add(WriteOp.CLEAR, self.name, raw)
        for value in encoded:
            session.add(WriteOp.LIST_APPEND, self.name, raw, value)

    def get(self, key: K) -> list[V]:
        session, raw = self._route(key)
        overlay = session.buffer.overlay(self.name, raw)

        def fetch() -> list[bytes]:
            stored = session.read(self.name, ReadOp.GET_LIST, [raw])[0]
            return wire.unpack_list(stored) if stored is not None else []

        return [self._values.loads(e) for e in resolve_list(overlay, fetch)]

    def iterate(self, key: K, page_size: int = 1000) -> Iterator[V]:
        """The list a page at a time, for lists too long to read at once."""
        session, raw = self._route(key)
        session.flush()
        for _position, value in session.pages(self.name, raw, page_size):
            yield self._values.loads(value)


class MapState(_Handle[K], Generic[K, MK, V]):
    def __init__(self, writer: Writer, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 map_key_serializer: Serializer[MK], value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._map_keys = map_key_serializer
        self._values = value_serializer

    def put(self, key: K, map_key: MK, value: V) -> None:
        session, raw = self._route(key)
        session.add(WriteOp.MAP_PUT, self.name, raw, self._values.dumps(value), self._map_keys.dumps(map_key))

    def put_all(self, key: K, entries: Mapping[MK, V]) -> None:
        session, raw = self._route(key)
        encoded = [(self._map_keys.dumps(map_key), self._values.dumps(value)) for map_key, value in entries.items()]
        for map_key, value in encoded:  # every entry checked before any is buffered
            session.node_limits.check_write(raw, value, map_key, needs_map_key=True)
        for map_key, value in encoded:
            session.add(WriteOp.MAP_PUT, self.name, raw, value, map_key)

    def remove(self, key: K, map_key: MK) -> None:
        session, raw = self._route(key)
        session.add(WriteOp.MAP_REMOVE, self.name, raw, b"", self._map_keys.dumps(map_key))

    def get(self, key: K, map_key: MK, default: V | None = None) -> V | None:
        session, raw = self._route(key)
        raw_map_key = self._map_keys.dumps(map_key)
        overlay = session.buffer.overlay(self.name, raw)
        value = resolve_map_entry(
            overlay, raw_map_key, lambda: session.read(self.name, ReadOp.MAP_GET, [raw], [raw_map_key])[0]
        )
        return self._values.loads(value) if value is not None else default

    def contains(self, key: K, map_key: MK) -> bool:
        session, raw = self._route(key)
        raw_map_key = self._map_keys.dumps(map_key)
        overlay = session.buffer.overlay(self.name, raw)
        found = resolve_map_entry(
            overlay, raw_map_key, lambda: session.read(self.name, ReadOp.MAP_CONTAINS, [raw], [raw_map_key])[0]
        )
        return found is not None

    def items(self, key: K, page_size: int = 1000) -> Iterator[tuple[MK, V]]:
        """Entries in map-key byte order, fetched a page at a time."""
        session, raw = self._route(key)
        session.flush()
        for map_key, value in session.pages(self.name, raw, page_size):
            yield self._map_keys.loads(map_key), self._values.loads(value)

    def keys(self, key: K, page_size: int = 1000) -> Iterator[MK]:
        return (map_key for map_key, _ in self.items(key, page_size))

    def values(self, key: K, page_size: int = 1000) -> Iterator[V]:
        return (value for _, value in self.items(key, page_size))

    def is_empty(self, key: K) -> bool:
        return next(iter(self.items(key, page_size=1)), None) is None


def _dump_all(serializer: Serializer[Any], objects: Sequence[Any]) -> Sequence[bytes]:
    if isinstance(serializer, BytesSerializer):
        return objects  # already bytes: skip a call per object on the hot path
    return list(map(serializer.dumps, objects))


def operand_serializer_for(merge_operator: str, element_serializer: Serializer[Any] | None) -> Serializer[Any]:
    if merge_operator.endswith("_int64"):
        return INT64
    if element_serializer is None:
        raise InvalidArgumentError(f"merge operator {merge_operator!r} needs an element serializer")
    return element_serializer

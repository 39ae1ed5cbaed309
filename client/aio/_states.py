"""Asyncio state handles: value, list, map and aggregating state of one ``AsyncWriter``.

The same kinds, serializers and read-your-writes rules as the sync handles; every call is a
coroutine, and calls of many coroutines to one shard leave together in batches.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from stateserver.client._serializers import Serializer
from stateserver.client._states import AggregatingState
from stateserver.client.aio._session import AsyncShardSession
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.states import StateDescriptor

if TYPE_CHECKING:
    from stateserver.client.aio._writer import AsyncWriter

K = TypeVar("K")
V = TypeVar("V")
MK = TypeVar("MK")


class _AsyncHandle(Generic[K]):
    def __init__(self, writer: AsyncWriter, descriptor: StateDescriptor, key_serializer: Serializer[K]) -> None:
        self._writer = writer
        self.descriptor = descriptor
        self.name = descriptor.name
        self._keys = key_serializer

    def _route(self, key: K) -> tuple[AsyncShardSession, bytes]:
        raw = self._keys.dumps(key)
        return self._writer.session_for(raw), raw

    async def clear(self, key: K) -> None:
        """Remove everything this state stores for ``key``."""
        session, raw = self._route(key)
        await session.add(WriteOp.CLEAR, self.name, raw)

    async def _get(self, key: K, op: ReadOp = ReadOp.GET, map_key: bytes = b"") -> Any:
        session, raw = self._route(key)
        return await session.read(op, self.name, raw, map_key, self.descriptor.merge_operator)


class AsyncValueState(_AsyncHandle[K], Generic[K, V]):
    def __init__(self, writer: AsyncWriter, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._values = value_serializer

    async def put(self, key: K, value: V) -> None:
        session, raw = self._route(key)
        await session.add(WriteOp.PUT, self.name, raw, self._values.dumps(value))

    async def delete(self, key: K) -> None:
        session, raw = self._route(key)
        await session.add(WriteOp.DELETE, self.name, raw)

    async def get(self, key: K, default: V | None = None) -> V | None:
        value = await self._get(key)
        return self._values.loads(value) if value is not None else default

    async def get_many(self, keys: Sequence[K], default: V | None = None) -> list[V | None]:
        return list(await asyncio.gather(*(self.get(key, default) for key in keys)))


class AsyncAggregatingState(_AsyncHandle[K], Generic[K, V]):
    """State folded on the node by a named merge operator (``sum_int64``, ``list_append``, ...)."""

    def __init__(self, writer: AsyncWriter, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 operand_serializer: Serializer[Any]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._operands = operand_serializer
        self._is_list = descriptor.merge_operator == "list_append"

    # Decoding an aggregate is the sync handle's, for the same merge operators.
    _decode = AggregatingState._decode

    async def merge(self, key: K, operand: Any) -> None:
        session, raw = self._route(key)
        await session.add(WriteOp.MERGE, self.name, raw, self._operands.dumps(operand))

    async def get(self, key: K) -> V | None:
        value = await self._get(key)
        return None if value is None else self._decode(value)  # type: ignore[misc]

    async def get_many(self, keys: Sequence[K]) -> list[V | None]:
        return list(await asyncio.gather(*(self.get(key) for key in keys)))


class AsyncListState(_AsyncHandle[K], Generic[K, V]):
    def __init__(self, writer: AsyncWriter, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._values = value_serializer

    async def add(self, key: K, value: V) -> None:
        session, raw = self._route(key)
        await session.add(WriteOp.LIST_APPEND, self.name, raw, self._values.dumps(value))

    async def add_all(self, key: K, values: Iterable[V]) -> None:
        await self._append(key, values, clear=False)

    async def update(self, key: K, values: Iterable[V]) -> None:
        """Replace the whole list."""
        await self._append(key, values, clear=True)

    async def _append(self, key: K, values: Iterable[V], *, clear: bool) -> None:
        session, raw = self._route(key)
        encoded = [self._values.dumps(value) for value in values]
        session.node_limits.check_writes([raw] * len(encoded), encoded)  # all checked before any is buffered
        if clear:
            await session.add(WriteOp.CLEAR, self.name, raw)
        for value in encoded:
            await session.add(WriteOp.LIST_APPEND, self.name, raw, value)

    async def get(self, key: K) -> list[V]:
        return [self._values.loads(element) for element in await self._get(key, ReadOp.GET_LIST)]


class AsyncMapState(_AsyncHandle[K], Generic[K, MK, V]):
    def __init__(self, writer: AsyncWriter, descriptor: StateDescriptor, key_serializer: Serializer[K],
                 map_key_serializer: Serializer[MK], value_serializer: Serializer[V]) -> None:
        super().__init__(writer, descriptor, key_serializer)
        self._map_keys = map_key_serializer
        self._values = value_serializer

    async def put(self, key: K, map_key: MK, value: V) -> None:
        session, raw = self._route(key)
        await session.add(WriteOp.MAP_PUT, self.name, raw, self._values.dumps(value), self._map_keys.dumps(map_key))

    async def put_all(self, key: K, entries: Mapping[MK, V]) -> None:
        session, raw = self._route(key)
        encoded = [(self._map_keys.dumps(map_key), self._values.dumps(value)) for map_key, value in entries.items()]
        for map_key, value in encoded:  # every entry checked before any is buffered
            session.node_limits.check_write(raw, value, map_key, needs_map_key=True)
        for map_key, value in encoded:
            await session.add(WriteOp.MAP_PUT, self.name, raw, value, map_key)

    async def remove(self, key: K, map_key: MK) -> None:
        session, raw = self._route(key)
        await session.add(WriteOp.MAP_REMOVE, self.name, raw, b"", self._map_keys.dumps(map_key))

    async def get(self, key: K, map_key: MK, default: V | None = None) -> V | None:
        value = await self._get(key, ReadOp.MAP_GET, self._map_keys.dumps(map_key))
        return self._values.loads(value) if value is not None else default

    async def contains(self, key: K, map_key: MK) -> bool:
        return await self._get(key, ReadOp.MAP_CONTAINS, self._map_keys.dumps(map_key)) is not None

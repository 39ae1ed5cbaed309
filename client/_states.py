"""The sync state handles: the shared ones (``_handles``), and paging through long lists and maps.

Writes are buffered per shard and flushed in batches; reads combine the node's answer
with the writer's buffered writes, so a writer always reads its own writes.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from stateserver.client import _handles
from stateserver.client._handles import AggregatingState, ValueState, operand_serializer_for

__all__ = ["AggregatingState", "ListState", "MapState", "ValueState", "operand_serializer_for"]

K = TypeVar("K")
V = TypeVar("V")
MK = TypeVar("MK")


class ListState(_handles.ListState[K, V], Generic[K, V]):
    def iterate(self, key: K, page_size: int = 1000) -> Iterator[V]:
        """The list a page at a time, for lists too long to read at once."""
        session, raw = self._route(key)
        session.flush()
        for _position, value in session.pages(self.name, raw, page_size):
            yield self._values.loads(value)


class MapState(_handles.MapState[K, MK, V], Generic[K, MK, V]):
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

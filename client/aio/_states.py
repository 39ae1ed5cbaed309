"""Asyncio state handles: the shared handles (``client._handles``) of an ``AsyncWriter``.

The same kinds, serializers and read-your-writes rules as the sync handles, the same code: every
call returns an awaitable (a settled one for a write that was buffered at once), and calls of many
coroutines to one shard leave together in batches.
"""
from __future__ import annotations

from typing import Generic, TypeVar

from stateserver.client import _handles

K = TypeVar("K")
V = TypeVar("V")
MK = TypeVar("MK")


class AsyncValueState(_handles.ValueState[K, V], Generic[K, V]):
    pass


class AsyncAggregatingState(_handles.AggregatingState[K, V], Generic[K, V]):
    pass


class AsyncListState(_handles.ListState[K, V], Generic[K, V]):
    pass


class AsyncMapState(_handles.MapState[K, MK, V], Generic[K, MK, V]):
    pass

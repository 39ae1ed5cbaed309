"""The asyncio stateserver client, for operators that issue many state requests at once.

    from stateserver.client.aio import AsyncStateClient
    async with AsyncStateClient("127.0.0.1:7700") as state:
        await state.create_namespace("wordcount", max_key_groups=128)
        writer = await state.open_writer("wordcount", key_groups=["0-63", "64-127"], epoch=1)
        counts = await writer.aggregating_state("counts", merge_operator="sum_int64")
        await asyncio.gather(*(counts.merge(word, 1) for word in words))  # coalesced per shard
        assert await counts.get("apple") == words.count("apple")          # reads see earlier writes

Requests of many coroutines to one shard leave together in batches (``CoalescingLimits``); a
read issued after a write of the same key sees it; each shard bounds the operations accepted
and not yet answered, so a slow node makes callers wait instead of growing memory. Errors are
the sync client's (``client.StateServerError`` and its subclasses).
"""
from stateserver.client.aio._client import AsyncStateClient
from stateserver.client.aio._limits import OutstandingLimit
from stateserver.client.aio._session import CoalescingLimits
from stateserver.client.aio._states import AsyncAggregatingState, AsyncListState, AsyncMapState, AsyncValueState
from stateserver.client.aio._writer import AsyncWriter

__all__ = [
    "AsyncAggregatingState",
    "AsyncListState",
    "AsyncMapState",
    "AsyncStateClient",
    "AsyncValueState",
    "AsyncWriter",
    "CoalescingLimits",
    "OutstandingLimit",
]

"""The asyncio client's reads: single-key gets of many coroutines join one group per shard while
they wait to be sent (also those waiting for a permit), and a large read goes out as several
batches at once; every caller gets its own value, with read-your-writes."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from stateserver.client import BYTES
from stateserver.client.aio import AsyncStateClient, AsyncWriter, CoalescingLimits
from support.node import NodeProcess

SHARDS = ["0-63", "64-127"]


@contextlib.asynccontextmanager
async def opened(node: NodeProcess, namespace: str, limits: CoalescingLimits,
                 key_groups: Any = SHARDS) -> AsyncIterator[tuple[AsyncWriter, Any]]:
    """A writer at epoch 1 and its value state "v" (bytes keys, JSON values), closed afterwards."""
    async with AsyncStateClient(node.address, limits=limits) as client:
        writer = await client.open_writer(namespace, key_groups=key_groups, epoch=1)
        yield writer, await writer.value_state("v", key_serializer=BYTES)
        await writer.close()


def test_gathered_gets_past_the_bound_each_get_their_own_value(node: NodeProcess, namespace: str) -> None:
    bound, count = 100, 1500

    async def scenario() -> None:
        async with opened(node, namespace, CoalescingLimits(max_ops=64, max_outstanding=bound)) as (writer, values):
            await values.put_many({b"k%d" % i: i for i in range(count)})
            await writer.flush()
            for i in range(0, count, 3):  # overwritten, partly still buffered when the gets go out
                await values.put(b"k%d" % i, -i)
            for i in range(1, count, 30):
                await values.delete(b"k%d" % i)
            keys = [b"k%d" % i for i in range(count)] + [b"absent"]
            got = await asyncio.gather(*(values.get(key, "none") for key in keys))
            expected = ["none" if i % 30 == 1 else -i if i % 3 == 0 else i for i in range(count)] + ["none"]
            assert got == expected
            sessions = writer.sessions
            assert max(s.outstanding.peak for s in sessions) <= bound
            assert sum(s.outstanding.waits for s in sessions) > 0  # some did wait for a permit
            assert writer.outstanding == 0
            assert sum(s.read_batches for s in sessions) < len(keys) / 20  # coalesced

    asyncio.run(scenario())


def test_a_cancelled_get_leaves_the_others_answered_and_its_permit_free(node: NodeProcess, namespace: str) -> None:
    async def scenario() -> None:
        async with opened(node, namespace, CoalescingLimits(max_ops=64, max_outstanding=50)) as (writer, values):
            await values.put_many({b"k%d" % i: i for i in range(300)})
            gets = [asyncio.ensure_future(values.get(b"k%d" % i)) for i in range(300)]
            for i in range(0, 300, 7):  # joined ones and ones waiting for a permit
                gets[i].cancel()
            done = await asyncio.gather(*gets, return_exceptions=True)
            assert all(isinstance(done[i], asyncio.CancelledError) for i in range(0, 300, 7))
            assert [done[i] for i in range(300) if i % 7] == [i for i in range(300) if i % 7]
            assert writer.outstanding == 0

    asyncio.run(scenario())


def test_a_large_get_many_leaves_in_few_batches_at_once(node: NodeProcess, namespace: str) -> None:
    """Fails on the code before issue 14: reads left one max_ops batch at a time (32 batches here)."""
    async def scenario() -> int:
        limits = CoalescingLimits(max_ops=64, max_in_flight=4, max_outstanding=4096)
        async with opened(node, namespace, limits, "0-127") as (writer, values):
            await values.put_many({b"k%d" % i: i for i in range(2048)})
            await writer.flush()
            keys = [b"k%d" % i for i in reversed(range(2048))]
            assert await values.get_many(keys) == list(reversed(range(2048)))
            return writer.sessions[0].read_batches

    # 2048 reads: four batches in flight at a time, each grown to 4 x 64 reads while more are queued.
    assert asyncio.run(scenario()) == 8


def test_put_many_past_the_bound_is_accepted_in_order_within_it(node: NodeProcess, namespace: str) -> None:
    async def scenario() -> None:
        async with opened(node, namespace, CoalescingLimits(max_ops=64, max_outstanding=300)) as (writer, values):
            for round_number in range(3):  # the same keys again: the last round's values win
                await asyncio.gather(*(values.put_many({b"k%d" % i: (round_number, i) for i in range(start, start + 700)})
                                       for start in range(0, 2100, 700)))
            assert max(s.outstanding.peak for s in writer.sessions) <= 300
            await writer.flush()
            assert await values.get_many([b"k%d" % i for i in range(2100)]) == [[2, i] for i in range(2100)]

    asyncio.run(scenario())

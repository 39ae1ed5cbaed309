"""The asyncio client against a real node: thousands of concurrent requests coalesced per shard,
per-key order, final values, bounded outstanding work behind a slow network, fencing, checkpoints."""
from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from stateserver.client import FencedError, SessionFailedError, StateClient
from stateserver.client.aio import AsyncStateClient, AsyncWriter, CoalescingLimits
from support.node import NodeProcess

SHARDS = ["0-31", "32-63", "64-95", "96-127"]


async def _open(client: AsyncStateClient, namespace: str, epoch: int = 1, **kwargs: object) -> AsyncWriter:
    await client.refresh()
    return await client.open_writer(namespace, key_groups=SHARDS, epoch=epoch, **kwargs)  # type: ignore[arg-type]


async def _commit(client: AsyncStateClient, writer: AsyncWriter, checkpoint_id: int) -> None:
    await writer.snapshot(checkpoint_id)
    handles = await writer.await_snapshot(checkpoint_id)
    await client.commit_checkpoint(writer.namespace, checkpoint_id, handles, writers=[writer])
    await writer.notify_checkpoint_complete(checkpoint_id)


def test_concurrent_requests_keep_per_key_order_and_final_values(node: NodeProcess, namespace: str) -> None:
    coroutines, steps, hot_keys = 1000, 12, 200
    observed_regressions: list[str] = []
    merged: Counter[str] = Counter()

    async def scenario() -> tuple[dict[str, int | None], list[int | None], int, int]:
        async with AsyncStateClient(node.address) as client:
            writer = await _open(client, namespace)
            counts = await writer.aggregating_state("counts", merge_operator="sum_int64")
            latest = await writer.value_state("latest")

            async def operator(index: int) -> None:
                rng = random.Random(index)
                seen: dict[str, int] = {}
                for step in range(steps):
                    key = f"hot{rng.randrange(hot_keys)}"
                    await counts.merge(key, 1)
                    merged[key] += 1
                    value = await counts.get(key)  # sees this merge and every merge before it
                    if value is None or value < seen.get(key, 0) + 1:
                        observed_regressions.append(f"{key}: {value} after {seen.get(key)}")
                    seen[key] = value or 0
                    await latest.put(f"own{index}", step)
                    if await latest.get(f"own{index}") != step:  # read-your-writes, to the value
                        observed_regressions.append(f"own{index} at step {step}")

            await asyncio.gather(*(operator(i) for i in range(coroutines)))
            keys = [f"hot{i}" for i in range(hot_keys)]
            final = dict(zip(keys, await counts.get_many(keys)))
            owns = await latest.get_many([f"own{i}" for i in range(coroutines)])
            reads = sum(s.read_batches for s in writer.sessions)
            assert max(s.outstanding.peak for s in writer.sessions) <= client.limits.max_outstanding
            await _commit(client, writer, 1)
            await writer.close()
            return final, owns, reads, coroutines * steps * 2

    final, owns, read_batches, reads = asyncio.run(scenario())
    assert observed_regressions == []
    assert final == {key: merged.get(key) for key in final}
    assert owns == [steps - 1] * coroutines
    assert read_batches < reads / 20  # coalesced: many reads per ReadBatch

    # What the node stored, through the sync client at a newer epoch restoring it.
    with StateClient(node.address) as sync_client:
        writer = sync_client.open_writer(namespace, key_groups=SHARDS, epoch=2, restore="latest")
        counts = writer.aggregating_state("counts", merge_operator="sum_int64")
        assert dict(zip(final, counts.get_many(list(final)))) == final


def test_list_map_and_value_state_read_their_buffered_writes(node: NodeProcess, namespace: str) -> None:
    async def scenario() -> None:
        async with AsyncStateClient(node.address) as client:
            writer = await _open(client, namespace)
            events = await writer.list_state("events")
            profile = await writer.map_state("profile")
            value = await writer.value_state("value")
            await asyncio.gather(*(events.add("u1", n) for n in range(3)))
            assert sorted(await events.get("u1")) == [0, 1, 2]
            await events.update("u1", ["x"])
            await profile.put("u1", "name", "ada")
            await profile.put("u1", "city", "paris")
            await profile.remove("u1", "city")
            await value.put("v", {"a": 1})
            assert (await events.get("u1"), await profile.get("u1", "name"), await profile.contains("u1", "city"),
                    await value.get("v")) == (["x"], "ada", False, {"a": 1})
            await writer.flush()  # the same answers from the node alone
            assert (await events.get("u1"), await profile.get("u1", "name"), await profile.contains("u1", "city"),
                    await value.get("v")) == (["x"], "ada", False, {"a": 1})
            await value.delete("v")
            await profile.clear("u1")
            assert (await value.get("v", "gone"), await profile.get("u1", "name")) == ("gone", None)
            await writer.close()

    asyncio.run(scenario())


def test_a_slow_node_makes_callers_wait_within_the_bound(node: NodeProcess, namespace: str, slow_proxy) -> None:
    proxy = slow_proxy(0.02)  # 20 ms more each way for every chunk of bytes
    bound = 200
    limits = CoalescingLimits(max_ops=64, max_outstanding=bound)
    coroutines, steps = 2000, 3

    async def scenario() -> tuple[list[int], list[int], list[int | None], int]:
        async with AsyncStateClient(proxy.address, limits=limits) as client:
            writer = await _open(client, namespace)
            counts = await writer.aggregating_state("counts", merge_operator="sum_int64")
            sampled: list[int] = []

            async def sample() -> None:
                while True:
                    sampled.append(writer.outstanding)
                    await asyncio.sleep(0.005)

            async def operator(index: int) -> None:
                for _ in range(steps):
                    key = f"k{index % 50}"
                    await counts.merge(key, 1)
                    await counts.get(key)

            sampler = asyncio.ensure_future(sample())
            await asyncio.gather(*(operator(i) for i in range(coroutines)))
            sampler.cancel()
            peaks = [session.outstanding.peak for session in writer.sessions]
            waits = [session.outstanding.waits for session in writer.sessions]
            final = await counts.get_many([f"k{i}" for i in range(50)])
            await writer.close()
            return peaks, waits, final, max(sampled)

    peaks, waits, final, most_sampled = asyncio.run(scenario())
    assert max(peaks) <= bound            # never more accepted-and-unanswered operations per shard
    assert most_sampled <= bound * len(SHARDS)
    assert sum(waits) > 0                 # callers did wait: the slow node slowed them down
    assert final == [coroutines // 50 * steps] * 50


def test_a_newer_writer_fences_the_asyncio_writer(node: NodeProcess, namespace: str) -> None:
    async def scenario() -> None:
        async with AsyncStateClient(node.address) as client:
            old = await _open(client, namespace, epoch=1)
            counts = await old.aggregating_state("counts", merge_operator="sum_int64")
            await counts.merge("a", 1)
            await _commit(client, old, 1)
            new = await _open(client, namespace, epoch=2, restore="latest")
            new_counts = await new.aggregating_state("counts", merge_operator="sum_int64")
            await counts.merge("a", 100)
            with pytest.raises(FencedError):
                await old.flush()
            with pytest.raises(SessionFailedError) as later:  # the writer stays failed, saying why
                await counts.merge("a", 1)
            assert isinstance(later.value.__cause__, FencedError)
            assert await new_counts.get("a") == 1
            await new.close()

    asyncio.run(scenario())


def test_asyncio_checkpoint_commit_and_restore(node: NodeProcess, namespace: str) -> None:
    async def scenario() -> tuple[int | None, int | None]:
        async with AsyncStateClient(node.address) as client:
            writer = await _open(client, namespace, epoch=1)
            counts = await writer.aggregating_state("counts", merge_operator="sum_int64")
            await asyncio.gather(*(counts.merge(f"k{i % 10}", 1) for i in range(1000)))
            assert await writer.snapshot(7) >= 0.0
            await counts.merge("k0", 1000)  # after the barrier: not in checkpoint 7
            handles = await writer.await_snapshot(7)
            await client.commit_checkpoint(namespace, 7, handles, writers=[writer])
            await writer.notify_checkpoint_complete(7)
            restored = await _open(client, namespace, epoch=2, restore="latest")
            restored_counts = await restored.aggregating_state("counts", merge_operator="sum_int64")
            return await restored_counts.get("k0"), await restored_counts.get("k9")

    assert asyncio.run(scenario()) == (100, 100)

"""The asyncio writer fails as a whole after a failed batch (DESIGN.md invariant 9), and its batches
fit what the node accepts, as the sync writer's do.

A batch the node refuses is made by writing, through the writer's own shard session, to a state
the node does not know: refused on the node (NOT_FOUND), not by the client's checks.
"""
from __future__ import annotations

import asyncio

import pytest

from stateserver.client import BYTES, InvalidArgumentError, NotFoundError, SessionFailedError
from stateserver.client.aio import AsyncStateClient
from stateserver.protocol.operations import ReadOp, WriteOp
from support.node import NodeProcess, read_request, read_values
from support.routing_stub import RoutingStub

KIB, MIB = 1 << 10, 1 << 20


def test_after_a_failed_batch_every_call_fails_and_no_checkpoint_holds_later_writes(
        node: NodeProcess, namespace: str) -> None:
    """Old code: a shard session's failure was its own; the writer's other shards went on, so a
    checkpoint taken after it held writes made after the lost batch."""
    async def scenario() -> None:
        async with AsyncStateClient(node.address) as client:
            writer = await client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=1)
            counts = await writer.aggregating_state("counts", merge_operator="sum_int64")
            await counts.merge("a", 1)
            await writer.snapshot(1)
            await client.commit_checkpoint(namespace, 1, await writer.await_snapshot(1), writers=[writer])

            failing = writer.session_for(b"a")
            other = next(s for s in writer.sessions if s is not failing)
            other_key = next(f"k{i}" for i in range(1000) if writer.session_for(f"k{i}".encode()) is other)
            await counts.merge("a", 10)
            await failing.add(WriteOp.PUT, "never-declared", b"k", b"v")
            with pytest.raises(NotFoundError):
                await failing.flush()
            # Every later call of the writer, on either shard, is refused and says why.
            calls = {
                "merge on the other shard": lambda: counts.merge(other_key, 100),
                "get": lambda: counts.get("a"),
                "flush": writer.flush,
                "snapshot": lambda: writer.snapshot(2),
                "await_snapshot": lambda: writer.await_snapshot(2),
                "new state handle": lambda: writer.value_state("other"),
            }
            for name, call in calls.items():
                with pytest.raises(SessionFailedError) as error:
                    await call()
                assert isinstance(error.value.__cause__, NotFoundError), name
            # The node holds batch 1 only (read past the client, whose calls are refused).
            stored = read_values(RoutingStub(node), read_request(failing.ref, "counts", ReadOp.GET, [b"a"]))
            assert stored == [(1).to_bytes(8, "little")]
            for session in writer.sessions:
                await session.close()

            reopened = await client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=2, restore=1)
            reopened_counts = await reopened.aggregating_state("counts", merge_operator="sum_int64")
            assert await reopened_counts.get("a") == 1
            assert await reopened_counts.get(other_key) is None
            await reopened.close()

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_many_large_concurrent_puts_are_split_below_the_message_size(node: NodeProcess, namespace: str) -> None:
    """1,000 concurrent puts of 70 KiB. Old code: every write joined the buffer before the pump ran,
    one 70 MiB batch went out and the node refused it (RESOURCE_EXHAUSTED, taken for unavailable)."""
    async def scenario() -> list[bytes | None]:
        async with AsyncStateClient(node.address) as client:
            writer = await client.open_writer(namespace, key_groups="0-127", epoch=1)
            blobs = await writer.value_state("blobs", value_serializer=BYTES)
            await asyncio.gather(*(blobs.put(f"k{i}", bytes([i % 251]) * (70 * KIB)) for i in range(1000)))
            await writer.flush()
            values = await blobs.get_many([f"k{i}" for i in (0, 499, 999)])
            await writer.close()
            return values

    assert asyncio.run(scenario()) == [bytes([i % 251]) * (70 * KIB) for i in (0, 499, 999)]


def test_an_oversized_value_is_refused_at_the_call_and_changes_nothing(node: NodeProcess, namespace: str) -> None:
    """Old code: buffered and sent, refused by the node with the batch, the session ended."""
    async def scenario() -> None:
        async with AsyncStateClient(node.address) as client:
            writer = await client.open_writer(namespace, key_groups="0-127", epoch=1)
            values = await writer.value_state("v", value_serializer=BYTES)
            await values.put("before", b"1")
            with pytest.raises(InvalidArgumentError, match="exceeds the node's limit"):
                await values.put("big", b"x" * (17 * MIB))
            with pytest.raises(InvalidArgumentError, match="empty"):
                await values.put("", b"x")
            await writer.flush()  # the writer goes on
            assert await values.get_many(["before", "big"]) == [b"1", None]
            ref = writer.sessions[0].ref
            assert read_values(RoutingStub(node), read_request(ref, "v", ReadOp.GET, [b"before", b"big"])) == [b"1", None]
            await writer.close()

    asyncio.run(scenario())

"""The asyncio client heals as the sync one does (issue 12, point 4), against real node processes.

Each test fails on the code before the change, as its docstring says."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from stateserver.client import ClientSettings, StateServerError, UnavailableError
from stateserver.client.aio import AsyncStateClient
from support.node import NodeProcess, free_loopback_port, start_node, unique_namespace

pytestmark = pytest.mark.timeout(120)


def test_every_node_marked_unavailable_is_probed_again(node: NodeProcess, namespace: str) -> None:
    """Before: ``create_namespace`` raised ``ValueError`` (``max()`` of nothing) and
    ``commit_checkpoint`` a ``RuntimeError`` (StopIteration inside a coroutine)."""
    async def scenario() -> bytes:
        async with AsyncStateClient(node.address, timeout=20) as state:
            await state.refresh()
            state.mark_unavailable(node.address)
            assert await state.create_namespace(namespace, max_key_groups=128) == 128
            state.mark_unavailable(node.address)
            writer = await state.open_writer(namespace, key_groups="0-127", epoch=await state.next_epoch(namespace))
            counts = await writer.aggregating_state("counts", merge_operator="sum_int64")
            await counts.merge("apple", 2)
            await writer.snapshot(1)
            handles = await writer.await_snapshot(1)
            state.mark_unavailable(node.address)
            await state.commit_checkpoint(namespace, 1, handles, writers=[writer], metadata=b"at-1")
            await writer.close()
            return (await state.checkpoint_metadata(namespace)).metadata

    assert asyncio.run(scenario()) == b"at-1"


def test_a_stopped_node_is_unavailable_every_time_and_used_again_within_two_seconds(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Before: the second call while the node was down raised ``ValueError`` and after the restart
    the node stayed marked unavailable (``refresh()`` skipped it: 'no node answered')."""
    namespace = unique_namespace(request.node.name)
    port = free_loopback_port()
    node = start_node(tmp_path / "data", port=port)

    async def scenario() -> float:
        nonlocal node
        async with AsyncStateClient(node.address, settings=ClientSettings(request_timeout=10)) as state:
            await state.create_namespace(namespace, max_key_groups=128)
            node.stop()
            for _ in range(3):
                for call in (state.create_namespace(namespace, max_key_groups=128), state.max_key_groups(namespace),
                             state.next_epoch(namespace), state.checkpoint_metadata(namespace)):
                    with pytest.raises(UnavailableError):
                        await call
            node = start_node(tmp_path / "data", port=port)  # returns once it reports SERVING
            serving = time.monotonic()
            while True:
                try:
                    assert await state.max_key_groups(namespace) == 128
                    break
                except StateServerError:
                    if time.monotonic() - serving > 10:
                        raise
                    await asyncio.sleep(0.02)
            return time.monotonic() - serving

    try:
        assert asyncio.run(scenario()) <= 2.0, "used again within 2 s of serving"
    finally:
        node.stop()

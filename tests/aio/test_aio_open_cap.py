"""Both clients keep at most ``ClientSettings.opens_per_node`` OpenShard calls in flight to a node,
so a recovery of many shards leaves the node threads to serve with. Counted by the node itself:
``stateserver_restores_in_flight_peak``, the most restores it ran at once.

The asyncio case fails on the code before the change: it sent every shard's OpenShard at once
(the node ran up to 16 restores at once).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stateserver.client import BYTES, ClientSettings, StateClient
from stateserver.client.aio import AsyncStateClient
from support.metrics import highest, scrape
from support.node import free_loopback_port, run_node

NAMESPACE = "open-cap"
SHARDS = [f"{i * 8}-{i * 8 + 7}" for i in range(16)]

pytestmark = pytest.mark.timeout(180)


def restores_peak(metrics_port: int) -> float:
    return highest(scrape(metrics_port), "stateserver_restores_in_flight_peak")


def checkpoint_every_shard(address: str) -> None:
    with StateClient(address, timeout=30) as client:
        client.create_namespace(NAMESPACE, max_key_groups=128)
        writer = client.open_writer(NAMESPACE, key_groups=SHARDS, epoch=1)
        values = writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
        values.put_many({f"key-{i}".encode(): bytes(2000) for i in range(20_000)})
        writer.snapshot(1)
        handles = writer.await_snapshot(1)
        client.commit_checkpoint(NAMESPACE, 1, handles, [writer])
        writer.notify_checkpoint_complete(1)
        writer.close()


async def restore_every_shard(address: str, epoch: int, opens_per_node: int) -> None:
    async with AsyncStateClient(address, settings=ClientSettings(opens_per_node=opens_per_node)) as client:
        writer = await client.open_writer(NAMESPACE, key_groups=SHARDS, epoch=epoch, restore=1)
        values = await writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
        assert await values.get(b"key-7") == bytes(2000)
        await writer.close()


def restore_every_shard_sync(address: str, epoch: int, opens_per_node: int) -> None:
    with StateClient(address, settings=ClientSettings(opens_per_node=opens_per_node)) as client:
        writer = client.open_writer(NAMESPACE, key_groups=SHARDS, epoch=epoch, restore=1)
        assert writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES).get(b"key-7") == bytes(2000)
        writer.close()


@pytest.mark.parametrize("face", ["asyncio", "sync"])
def test_a_client_opens_at_most_opens_per_node_shards_at_once(tmp_path: Path, face: str) -> None:
    def restore(epoch: int, opens_per_node: int) -> None:
        if face == "asyncio":
            asyncio.run(restore_every_shard(node.address, epoch, opens_per_node))
        else:
            restore_every_shard_sync(node.address, epoch, opens_per_node)

    metrics_port = free_loopback_port()
    store_url = (tmp_path / "store").as_uri()
    with run_node(tmp_path / "data", workers=1,
                  extra_args=["--snapshot-url", store_url, "--metrics-port", str(metrics_port)]) as node:
        checkpoint_every_shard(node.address)
        restore(epoch=2, opens_per_node=2)
        assert 1 <= restores_peak(metrics_port) <= 2
        # The same restore without a cap: the node does run several at once, so the count above
        # is the client's doing, not the node's pace.
        restore(epoch=3, opens_per_node=len(SHARDS))
        assert restores_peak(metrics_port) > 2

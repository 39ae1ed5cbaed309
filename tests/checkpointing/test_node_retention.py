"""Retention on the node: after each commit it keeps the last ``--retained-checkpoints`` and
deletes what only older checkpoints reference, never what a checkpoint in flight needs."""
from __future__ import annotations

import time
from pathlib import Path

from stateserver.client import BYTES, StateClient, Writer
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.store import ObjectStore, open_store
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from support.node import run_node

RETAINED = 2
KEYS_PER_CHECKPOINT = 2000


def commit(client: StateClient, writer: Writer, checkpoint_id: int, handles: list[cpb.ShardSnapshotHandle]) -> None:
    client.commit_checkpoint("ret", checkpoint_id, handles, [writer])
    writer.notify_checkpoint_complete(checkpoint_id)


def object_checkpoints(store: ObjectStore) -> dict[str, int]:
    """Every object of the namespace spelled by ``paths``, with the checkpoint that wrote it."""
    found = {}
    for meta in store.list("ret/"):
        parsed = paths.parse_key(meta.key)
        if parsed is not None:
            found[meta.key] = parsed.checkpoint_id
    return found


def wait_for_committed(catalog: CheckpointCatalog, expected: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while catalog.committed_ids("ret") != expected:
        assert time.monotonic() < deadline, f"committed {catalog.committed_ids('ret')}, expected {expected}"
        time.sleep(0.05)


def test_node_keeps_the_last_checkpoints_and_what_a_checkpoint_in_flight_needs(
        store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    catalog = CheckpointCatalog(store)
    expected: dict[str, bytes] = {}
    handles: dict[int, list[cpb.ShardSnapshotHandle]] = {}
    with run_node(tmp_path / "data", extra_args=["--snapshot-url", store_url,
                                                 "--retained-checkpoints", str(RETAINED)]) as node, \
            StateClient(node.address) as client:
        client.create_namespace("ret", max_key_groups=32)
        writer = client.open_writer("ret", key_groups=["0-15", "16-31"], epoch=1)
        state = writer.value_state("v", value_serializer=BYTES)
        for checkpoint_id in range(1, 6):
            batch = {f"k{checkpoint_id}-{i}": bytes([checkpoint_id]) * 64 for i in range(KEYS_PER_CHECKPOINT)}
            state.put_many(batch)
            expected |= batch
            writer.snapshot(checkpoint_id)
            handles[checkpoint_id] = writer.await_snapshot(checkpoint_id)
            if checkpoint_id <= 3:
                commit(client, writer, checkpoint_id, handles[checkpoint_id])
        wait_for_committed(catalog, [2, 3])

        # Checkpoints 4 and 5 are durable; 4 commits, and the retention that runs after it must
        # leave alone every object of 5, which may still commit.
        in_flight = {key for key, c in object_checkpoints(store).items() if c == 5}
        assert in_flight
        commit(client, writer, 4, handles[4])
        wait_for_committed(catalog, [3, 4])
        assert in_flight <= set(object_checkpoints(store))

        commit(client, writer, 5, handles[5])
        wait_for_committed(catalog, [4, 5])
        named = {paths.checkpoint_metadata("ret", c) for c in (4, 5)}
        for checkpoint_id in (4, 5):
            for handle in catalog.load("ret", checkpoint_id).shards:
                named |= {handle.manifest_key, *(f.object_key for f in handle.shared_files),
                          *(f.object_key for f in handle.private_files)}
        deadline = time.monotonic() + 20
        while set(object_checkpoints(store)) != named:  # retention runs after the commit returns
            assert time.monotonic() < deadline, sorted(set(object_checkpoints(store)) ^ named)
            time.sleep(0.05)
        assert min(object_checkpoints(store).values()) < 4, "the retained checkpoints reuse older SSTs"
        writer.close()

        restored = client.open_writer("ret", key_groups="0-31", epoch=2, restore="latest")
        values = restored.value_state("v", value_serializer=BYTES)
        assert values.get_many(list(expected)) == list(expected.values())
        restored.close()

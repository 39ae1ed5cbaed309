"""Issue #3, a node killed while it uploads a snapshot: checkpoint 2 does not exist, checkpoint 1
restores to exactly its state, and garbage collection reclaims every object checkpoint 2 wrote
while keeping all that checkpoint 1 needs. On file:// and on SeaweedFS S3.

The kill is not a race with the upload: the node's uploads of checkpoint 2 stall for good after the
first one (support.slow_upload_node), so when the test sees that object in the store and sends
SIGKILL, the snapshot is certainly landed in part and unfinished.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from stateserver.client import BYTES, StateClient
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.store import ObjectStore, open_store
from support.checkpoint_objects import (
    objects_by_checkpoint, restore_checkpoint, restored_values, stateserver_cli, store_args,
)
from support.node import NodeProcess
from support.slow_upload_node import start_slow_upload_node

NAMESPACE = "crash"
MAX_KEY_GROUPS = 128
SHARDS = ("0-63", "64-127")
STATE = "values"
KEYS = 20_000
VALUE_BYTES = 100
LANDED_TIMEOUT_S = 30.0

pytestmark = pytest.mark.timeout(180)


def wait_for_objects_of(store: ObjectStore, checkpoint_id: int, node: NodeProcess) -> list[str]:
    deadline = time.monotonic() + LANDED_TIMEOUT_S
    while True:
        landed = [meta.key for meta in objects_by_checkpoint(store, NAMESPACE).get(checkpoint_id, [])]
        if landed:
            return landed
        assert node.is_alive(), node.log_tail()
        assert time.monotonic() < deadline, f"no object of checkpoint {checkpoint_id} landed\n{node.log_tail()}"
        time.sleep(0.02)


def assert_restores_exactly(store_url: str, data_dir: Path, expected: dict[bytes, bytes]) -> None:
    restore_checkpoint(store_url, NAMESPACE, 1, data_dir)
    stored: dict[bytes, bytes] = {}
    for key_groups in SHARDS:
        shard = restored_values(data_dir, NAMESPACE, key_groups, STATE)
        assert not stored.keys() & shard.keys(), "a key is in two shards"
        stored.update(shard)
    assert stored == expected


def test_a_node_killed_mid_upload_leaves_checkpoint_1_whole_and_gc_reclaims_checkpoint_2(
        store_url: str, tmp_path: Path) -> None:
    rng = random.Random(5)
    state_1 = {f"key-{i}".encode(): rng.randbytes(VALUE_BYTES) for i in range(KEYS)}
    overwritten, deleted = rng.sample(sorted(state_1), 2_000), rng.sample(sorted(state_1), 1_000)
    added = {f"new-{i}".encode(): rng.randbytes(VALUE_BYTES) for i in range(3_000)}
    store = open_store(store_url)

    node = start_slow_upload_node(tmp_path / "node", snapshot_url=store_url, stall_from_checkpoint=2,
                                  uploads_before_stall=1)
    try:
        with StateClient(node.address, timeout=30) as client:
            client.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
            writer = client.open_writer(NAMESPACE, key_groups=list(SHARDS), epoch=1)
            values = writer.value_state(STATE, key_serializer=BYTES, value_serializer=BYTES)
            values.put_many(state_1)
            writer.snapshot(1)
            client.commit_checkpoint(NAMESPACE, 1, writer.await_snapshot(1), writers=[writer])
            writer.notify_checkpoint_complete(1)

            values.put_many({key: rng.randbytes(VALUE_BYTES) for key in overwritten})
            values.put_many(added)
            for key in deleted:
                values.delete(key)
            writer.snapshot(2)  # the sync phase is done; the upload goes on in the background
            landed = wait_for_objects_of(store, 2, node)
            node.kill()  # SIGKILL: no drain, no close, the upload cut off
    finally:
        node.stop()

    catalog = CheckpointCatalog(store)
    assert catalog.committed_ids(NAMESPACE) == [1]
    assert not store.exists(paths.checkpoint_metadata(NAMESPACE, 2))
    of_2 = objects_by_checkpoint(store, NAMESPACE)[2]
    assert {meta.key for meta in of_2} >= set(landed)
    kinds = {parsed.kind for meta in of_2 if (parsed := paths.parse_key(meta.key)) is not None}
    assert kinds <= {"shared", "private"}, "no shard snapshot of checkpoint 2 finished: it has no manifest"

    assert_restores_exactly(store_url, tmp_path / "restored-before-gc", state_1)
    verified = stateserver_cli("verify", *store_args(store_url, NAMESPACE), "--checkpoint", "1", "--checksums")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # With the default minimum age, checkpoint 2 might still be uploading somewhere: it stays.
    cautious = stateserver_cli("gc", *store_args(store_url, NAMESPACE))
    assert cautious.returncode == 0, cautious.stderr
    assert f"kept {len(of_2)} young objects" in cautious.stdout
    assert {meta.key for meta in objects_by_checkpoint(store, NAMESPACE)[2]} == {meta.key for meta in of_2}

    collected = stateserver_cli("gc", *store_args(store_url, NAMESPACE), "--min-age", "0")
    assert collected.returncode == 0, collected.stderr
    for meta in of_2:
        assert f"deleted {meta.key} " in collected.stdout
    remaining = objects_by_checkpoint(store, NAMESPACE)
    assert sorted(remaining) == [1], f"objects of checkpoint 2 survived: {remaining.get(2)}"
    metadata = catalog.load(NAMESPACE, 1)
    needed = {paths.checkpoint_metadata(NAMESPACE, 1)} | {
        key for handle in metadata.shards
        for key in (handle.manifest_key, *(f.object_key for f in (*handle.shared_files, *handle.private_files)))}
    assert {meta.key for meta in remaining[1]} == needed
    # Besides: ownership records, and the namespace's definition (kept for as long as it exists).
    others = {meta.key for meta in store.list(NAMESPACE)} - needed - {paths.namespace_definition(NAMESPACE)}
    assert all(key.startswith(paths.owners_prefix(NAMESPACE) + "/") for key in others), others
    verified = stateserver_cli("verify", *store_args(store_url, NAMESPACE), "--checkpoint", "1", "--checksums")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert_restores_exactly(store_url, tmp_path / "restored-after-gc", state_1)

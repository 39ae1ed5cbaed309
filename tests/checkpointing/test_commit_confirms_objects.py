"""Commits that stay restorable against garbage collection, with real node processes and stores.

Both tests fail on the code before the fix: ``stateserver gc`` deleted the files of the checkpoint
a rolled-back writer reuses and checkpoint 30 still committed their names (``verify`` then found
them missing); and a commit trusted its manifests, so it committed a checkpoint naming a deleted file.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stateserver.client import BYTES, InvalidArgumentError, StateClient, Writer
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectStore, open_store
from support.node import run_node

RANGES = ["0-15", "16-31"]


def checkpoint(client: StateClient, writer: Writer, namespace: str, checkpoint_id: int) -> None:
    writer.snapshot(checkpoint_id)
    client.commit_checkpoint(namespace, checkpoint_id, writer.await_snapshot(checkpoint_id), [writer])
    writer.notify_checkpoint_complete(checkpoint_id)


def write(writer: Writer, model: dict[str, bytes], checkpoint_id: int, count: int = 300) -> None:
    # Some keys rewritten every time, some new: SSTs come and go, and some live on for long.
    batch = {f"k{(checkpoint_id * 37 + i) % 900}": bytes([checkpoint_id % 256]) * 40 for i in range(count)}
    writer.value_state("v", value_serializer=BYTES).put_many(batch)
    model.update(batch)


def files_of(store: ObjectStore, namespace: str, checkpoint_id: int) -> set[str]:
    metadata = CheckpointCatalog(store).load(namespace, checkpoint_id)
    return {f.object_key for h in metadata.shards for f in (*h.shared_files, *h.private_files)}


def assert_restored_from(store: ObjectStore, namespace: str, epoch: int, checkpoint_id: int) -> None:
    """The ownership records of the reopened shards say which checkpoint they restored: what GC keeps."""
    for text in RANGES:
        record = json.loads(store.get(paths.owner_record(namespace, KeyGroupRange.parse(text), epoch)))
        assert record["restored_from"] == checkpoint_id


def test_gc_after_a_rollback_keeps_what_the_restored_owner_reuses_and_the_next_commit_restores(
        store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    catalog = CheckpointCatalog(store)
    namespace = "rollback"
    model: dict[str, bytes] = {}
    with run_node(tmp_path / "data", extra_args=["--snapshot-url", store_url,
                                                 "--retained-checkpoints", "100"]) as node, \
            StateClient(node.address, timeout=30) as client:
        client.create_namespace(namespace, max_key_groups=32)
        writer = client.open_writer(namespace, key_groups=RANGES, epoch=1)
        at_10: dict[str, bytes] = {}
        for checkpoint_id in range(1, 22):
            write(writer, model, checkpoint_id)
            checkpoint(client, writer, namespace, checkpoint_id)
            if checkpoint_id == 10:
                at_10 = dict(model)
        writer.close()
        assert catalog.committed_ids(namespace) == list(range(1, 22))

        rolled_back = client.open_writer(namespace, key_groups=RANGES, epoch=2, restore=10)
        assert_restored_from(store, namespace, 2, 10)
        reused = files_of(store, namespace, 10) - files_of(store, namespace, 20) - files_of(store, namespace, 21)
        assert reused, "checkpoint 10 must have files that the retained checkpoints do not name"

        gc = subprocess.run([sys.executable, "-m", "stateserver.cli", "gc", "--snapshot-url", store_url,
                             "--namespace", namespace], capture_output=True, text=True, timeout=120)
        assert gc.returncode == 0, gc.stderr
        assert "kept checkpoints 10 (a current shard owner restored them)" in gc.stdout
        listed = {meta.key for meta in store.list(namespace)}
        assert reused <= listed, "gc deleted files of the checkpoint a current owner restored"
        assert catalog.committed_ids(namespace) == [10, 20, 21]

        model = dict(at_10)
        write(rolled_back, model, 30)
        checkpoint(client, rolled_back, namespace, 30)
        latest = catalog.latest(namespace)
        assert latest.checkpoint_id == 30
        assert catalog.verify(latest, checksums=True) == []
        rolled_back.close()

        # Once the owner committed past it, checkpoint 10 is no longer kept.
        gc = subprocess.run([sys.executable, "-m", "stateserver.cli", "gc", "--snapshot-url", store_url,
                             "--namespace", namespace], capture_output=True, text=True, timeout=120)
        assert gc.returncode == 0, gc.stderr
        assert catalog.committed_ids(namespace) == [21, 30]
        assert catalog.verify(catalog.latest(namespace), checksums=True) == []

        restored = client.open_writer(namespace, key_groups="0-31", epoch=3, restore="latest")
        values = restored.value_state("v", value_serializer=BYTES)
        assert values.get_many(list(model)) == list(model.values())
        restored.close()


def test_a_commit_naming_a_missing_file_fails_and_the_next_snapshot_uploads_it_again(
        store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    catalog = CheckpointCatalog(store)
    namespace = "missing"
    model: dict[str, bytes] = {}
    with run_node(tmp_path / "data", extra_args=["--snapshot-url", store_url]) as node, \
            StateClient(node.address, timeout=30) as client:
        client.create_namespace(namespace, max_key_groups=32)
        writer = client.open_writer(namespace, key_groups=RANGES, epoch=1)
        write(writer, model, 1, count=900)
        checkpoint(client, writer, namespace, 1)
        write(writer, model, 2, count=50)
        writer.snapshot(2)
        handles = writer.await_snapshot(2)
        # A file checkpoint 2 reuses from checkpoint 1 disappears (an operator's gc, a lost object).
        reused = sorted(f.object_key for h in handles for f in h.shared_files
                        if paths.checkpoint_id_of(f.object_key) == 1)
        assert reused
        store.delete(reused[0])

        with pytest.raises(InvalidArgumentError, match="not committed.*missing"):
            client.commit_checkpoint(namespace, 2, handles, [writer])
        assert catalog.committed_ids(namespace) == [1]  # nothing committed
        writer.notify_checkpoint_aborted(2)

        # The shard's next snapshot finds the file gone and uploads it again.
        write(writer, model, 3, count=50)
        checkpoint(client, writer, namespace, 3)
        latest = catalog.latest(namespace)
        assert latest.checkpoint_id == 3 and catalog.verify(latest, checksums=True) == []
        assert reused[0] not in files_of(store, namespace, 3)
        writer.close()

        restored = client.open_writer(namespace, key_groups="0-31", epoch=2, restore="latest")
        assert restored.value_state("v", value_serializer=BYTES).get_many(list(model)) == list(model.values())
        restored.close()

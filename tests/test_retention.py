"""Retention after a commit (reference counting, no listing of the namespace) and the collection of
superseded ownership records, through the node's Checkpointing with the real store wrapped to count
its calls, on file:// and S3.

Fails on the code before the fix: retention listed every prefix of the namespace after each commit,
a commit listed ``owners/`` once per shard, and ownership records were never deleted.
"""
from __future__ import annotations

import pathlib
import threading
from collections.abc import Iterator

import pytest

from restore.state_builder import NamespaceState, small_resources
from stateserver.store import paths
from stateserver.node.checkpointing import Checkpointing
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.errors import Fenced
from stateserver.snapshot.gc import retire_checkpoints
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectMeta, ObjectStore, RetryingObjectStore, open_store
from stateserver.ownership.claims import Ownership
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


class CountingStore:
    """The real store, with every listing and deletion recorded."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.listed: list[tuple[str, str]] = []  # (thread, prefix)
        self.deleted: list[str] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.inner.url

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        with self._lock:
            self.listed.append((threading.current_thread().name.split("_")[0], prefix.rstrip("/")))
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        with self._lock:
            self.deleted.append(key)
        self.inner.delete(key)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def named_by(metadata: cpb.CheckpointMetadata) -> set[str]:
    keys = {paths.checkpoint_metadata(metadata.namespace, metadata.checkpoint_id)}
    for handle in metadata.shards:
        keys |= {handle.manifest_key, *(f.object_key for f in (*handle.shared_files, *handle.private_files))}
    return keys


def test_a_commits_retention_lists_nothing_of_the_namespace_and_retires_exactly_the_unshared_objects(
        store_url: str, tmp_path: pathlib.Path) -> None:
    store = RetryingObjectStore(open_store(store_url))
    counting = CountingStore(store)
    checkpointing = Checkpointing(counting, work_dir=tmp_path / "work", resources=small_resources(),  # type: ignore[arg-type]
                                  retained_checkpoints=2)
    source = NamespaceState(tmp_path / "source", store, "refcount", parallelism=2)
    catalog = CheckpointCatalog(store)
    try:
        committed: dict[int, cpb.CheckpointMetadata] = {}
        for checkpoint_id in (1, 2, 3, 4):
            source.write_every_kind(400)
            handles = source.snapshot(checkpoint_id)
            counting.listed.clear()
            counting.deleted.clear()
            checkpointing.commit("refcount", checkpoint_id, handles)
            checkpointing.retention_executor.submit(lambda: None).result()  # retention has run
            for snapshots in source.snapshots:
                snapshots.complete(checkpoint_id)
            committed[checkpoint_id] = catalog.load("refcount", checkpoint_id)
            # The commit lists the checkpoints and, once for all shards, the owners. Retention lists
            # the same two prefixes (the owners again after retiring, for owners that appeared
            # meanwhile), never the namespace, its shared files, private files or manifests.
            by_commit = sorted(prefix for thread, prefix in counting.listed if thread != "retention")
            by_retention = {prefix for thread, prefix in counting.listed if thread == "retention"}
            assert by_commit == ["refcount/checkpoints", "refcount/owners"]
            assert by_retention == {"refcount/checkpoints", "refcount/owners"}
            if checkpoint_id >= 3:
                retired = committed[checkpoint_id - 2]
                kept = named_by(committed[checkpoint_id - 1]) | named_by(committed[checkpoint_id])
                assert set(counting.deleted) == named_by(retired) - kept
                assert counting.deleted[0] == paths.checkpoint_metadata("refcount", checkpoint_id - 2)
            else:
                assert counting.deleted == []
        assert catalog.committed_ids("refcount") == [3, 4]
        assert named_by(committed[1]) & named_by(committed[4]), "later checkpoints reuse older SSTs"
        listed = {meta.key for meta in store.list("refcount") if paths.parse_key(meta.key)}
        assert listed == named_by(committed[3]) | named_by(committed[4])
    finally:
        source.close()
        checkpointing.close()


def test_superseded_ownership_records_are_collected_and_fencing_still_holds(store_url: str) -> None:
    store = RetryingObjectStore(open_store(store_url))
    ownership = Ownership(store)
    claims = [("0-63", 1), ("64-127", 1), ("0-127", 2), ("0-63", 3), ("64-95", 3)]
    for text, epoch in claims:
        ownership.claim("owned", KeyGroupRange.parse(text), epoch, "node-a")
    record = {(text, epoch): paths.owner_record("owned", KeyGroupRange.parse(text), epoch) for text, epoch in claims}

    report = retire_checkpoints(store, "owned", retain=1)
    # 0-127@2 still owns 96-127; the epoch-1 records are covered by newer ones everywhere.
    assert {item.key for item in report.owner_records} == {record["0-63", 1], record["64-127", 1]}
    remaining = {meta.key for meta in store.list(paths.owners_prefix("owned"))}
    assert remaining == {record["0-127", 2], record["0-63", 3], record["64-95", 3]}
    for text, epoch in (("0-63", 1), ("64-127", 1), ("96-127", 1), ("0-63", 2)):
        with pytest.raises(Fenced):
            ownership.check("owned", KeyGroupRange.parse(text), epoch)
    ownership.check("owned", KeyGroupRange.parse("96-127"), 2)  # the owner of those is not fenced

    ownership.claim("owned", KeyGroupRange.parse("0-127"), 4, "node-b")
    retire_checkpoints(store, "owned", retain=1)
    assert {meta.key for meta in store.list(paths.owners_prefix("owned"))} == {
        paths.owner_record("owned", KeyGroupRange(0, 127), 4)}

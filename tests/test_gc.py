"""Retention and garbage collection (invariant 4) against real snapshots, on file:// and S3."""
from __future__ import annotations

import concurrent.futures
import datetime
import pathlib
from collections.abc import Iterable

import pytest

from restore.state_builder import NamespaceState, dump_shard, open_restored, small_resources
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.errors import InvalidInput
from stateserver.snapshot.gc import collect_garbage
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectStore, RetryingObjectStore, open_store
from stateserver.restore import restore_shard
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

HOUR = datetime.timedelta(hours=1)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def keys_in(store: ObjectStore, namespace: str) -> set[str]:
    return {meta.key for meta in store.list(namespace)}


def named_by(metadata: cpb.CheckpointMetadata) -> set[str]:
    return {paths.checkpoint_metadata(metadata.namespace, metadata.checkpoint_id)} | keys_of(metadata.shards)


def keys_of(handles: Iterable[cpb.ShardSnapshotHandle]) -> set[str]:
    keys = set()
    for handle in handles:
        keys.add(handle.manifest_key)
        keys.update(f.object_key for f in (*handle.shared_files, *handle.private_files))
    return keys


def of_checkpoint(checkpoint_id: int, keys: Iterable[str]) -> set[str]:
    """The keys that checkpoint ``checkpoint_id`` wrote."""
    parsed = {key: paths.parse_key(key) for key in keys}
    return {key for key, p in parsed.items() if p is not None and p.checkpoint_id == checkpoint_id}


def assert_restores(store: ObjectStore, metadata: cpb.CheckpointMetadata, tmp_path: pathlib.Path) -> None:
    assert CheckpointCatalog(store).verify(metadata, checksums=True) == []
    target = tmp_path / f"restored-{metadata.checkpoint_id}"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        restore_shard(store, metadata, KeyGroupRange(0, 127), target, resources=small_resources(), executor=pool)
    shard = open_restored(target, metadata.namespace, KeyGroupRange(0, 127))
    try:
        assert dump_shard(shard)["state.values"]
    finally:
        shard.close()


def test_gc_keeps_what_retained_checkpoints_name_and_reclaims_expired_ones(store_url: str,
                                                                          tmp_path: pathlib.Path) -> None:
    store = RetryingObjectStore(open_store(store_url))
    source = NamespaceState(tmp_path / "source", store, "retention", parallelism=2)
    try:
        kept: list[cpb.CheckpointMetadata] = []
        for checkpoint_id in (1, 2, 3):
            source.write_every_kind(600)
            kept.append(source.checkpoint(checkpoint_id))
    finally:
        source.close()
    first, second, third = kept
    # Checkpoint 2 reuses SSTs that checkpoint 1 uploaded: they must survive 1's expiry.
    assert of_checkpoint(1, named_by(second))
    foreign = ["retention/shared/notes.txt", "retention/README", "retention/checkpoints/00000000000000000001/extra"]
    for key in foreign:
        store.put(key, b"not ours")
    before = keys_in(store, "retention")

    dry = collect_garbage(store, "retention", retain=2, min_age=HOUR, now=now(), dry_run=True)
    assert keys_in(store, "retention") == before  # a dry run changes nothing
    assert dry.dry_run and dry.retained == (2, 3) and dry.expired == (1,)
    assert dry.deleted[0].key == paths.checkpoint_metadata("retention", 1)  # the checkpoint goes first
    assert {item.key for item in dry.deleted} == named_by(first) - named_by(second) - named_by(third)
    assert all("expired checkpoint 1" in item.reason for item in dry.deleted[1:])
    assert dry.bytes_deleted == sum(item.size for item in dry.deleted) > 0

    report = collect_garbage(store, "retention", retain=2, min_age=HOUR, now=now(), dry_run=False)
    assert [(i.key, i.reason) for i in report.deleted] == [(i.key, i.reason) for i in dry.deleted]
    assert keys_in(store, "retention") == named_by(second) | named_by(third) | set(foreign)
    assert CheckpointCatalog(store).committed_ids("retention") == [2, 3]
    assert_restores(store, second, tmp_path)

    again = collect_garbage(store, "retention", retain=2, min_age=HOUR, now=now(), dry_run=False)
    assert again.deleted == ()  # nothing left to reclaim


def test_gc_reclaims_a_failed_checkpoint_and_keeps_young_uploads_of_one_in_flight(store_url: str,
                                                                                  tmp_path: pathlib.Path) -> None:
    store = RetryingObjectStore(open_store(store_url))
    source = NamespaceState(tmp_path / "source", store, "failures", parallelism=2)
    try:
        source.write_every_kind(500)
        source.checkpoint(1)
        source.write_every_kind(200)
        failed = source.snapshot(2)  # durable, but never committed: checkpoint 2 failed
        source.write_every_kind(200)
        third = source.checkpoint(3)
        source.write_every_kind(200)
        in_flight = source.snapshot(4)  # not committed yet: may still commit
    finally:
        source.close()
    failed_keys = of_checkpoint(2, keys_of(failed))
    in_flight_keys = of_checkpoint(4, keys_of(in_flight))
    assert failed_keys and in_flight_keys

    report = collect_garbage(store, "failures", retain=1, min_age=HOUR, now=now(), dry_run=False)
    remaining = keys_in(store, "failures")
    # Young objects stay whatever their checkpoint id: a writer that rolled back may be uploading
    # under an id at or below the latest committed one (before the fix, checkpoint 2's went at once).
    assert failed_keys <= remaining and in_flight_keys <= remaining
    assert {i.key for i in report.kept_young} == failed_keys | in_flight_keys
    assert remaining == named_by(third) | failed_keys | in_flight_keys
    assert_restores(store, third, tmp_path)

    later = collect_garbage(store, "failures", retain=1, min_age=HOUR, now=now() + 2 * HOUR, dry_run=False)
    assert {i.key for i in later.deleted} == failed_keys | in_flight_keys  # old enough: those checkpoints are dead
    assert any("never committed and is subsumed by checkpoint 3" in i.reason for i in later.deleted)
    assert keys_in(store, "failures") == named_by(third)


def test_files_named_by_a_young_manifest_in_flight_survive_their_checkpoints_expiry(tmp_path: pathlib.Path) -> None:
    store = open_store((tmp_path / "store").as_uri())
    source = NamespaceState(tmp_path / "source", store, "lagging", parallelism=1)
    try:
        source.write_every_kind(300)
        first = source.checkpoint(1)
        source.write_every_kind(300)
        source.checkpoint(2)
    finally:
        source.close()
    # A node that never heard checkpoint 2 complete snapshots checkpoint 3 reusing 1's uploads.
    handle = cpb.ShardSnapshotHandle()
    handle.CopyFrom(first.shards[0])
    handle.checkpoint_id = 3
    handle.manifest_key = paths.shard_manifest("lagging", 3, KeyGroupRange(0, 127))
    store.put(handle.manifest_key, handle.SerializeToString())

    report = collect_garbage(store, "lagging", retain=1, min_age=HOUR, now=now(), dry_run=True)
    deleted = {item.key for item in report.deleted}
    assert paths.checkpoint_metadata("lagging", 1) in deleted
    assert not deleted & {f.object_key for f in handle.shared_files}
    assert any("named by a shard manifest" in item.reason for item in report.kept_young)
    later = collect_garbage(store, "lagging", retain=1, min_age=HOUR, now=now() + 2 * HOUR, dry_run=True)
    assert handle.manifest_key in {item.key for item in later.deleted}


def test_gc_refuses_to_retain_nothing(tmp_path: pathlib.Path) -> None:
    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(InvalidInput, match="at least 1"):
        collect_garbage(store, "any", retain=0, min_age=HOUR, now=now(), dry_run=True)
    empty = collect_garbage(store, "any", retain=1, min_age=HOUR, now=now(), dry_run=False)
    assert empty.deleted == () and empty.retained == ()

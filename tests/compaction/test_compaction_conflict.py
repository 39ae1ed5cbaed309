"""A job still running commits the compaction's checkpoint id first: the compaction fails cleanly,
the job's checkpoint stands, and gc reclaims everything the compaction uploaded."""
from __future__ import annotations

import concurrent.futures
import datetime
import pathlib

import pytest

from stateserver.compaction import CompactionConflict, ShardCompaction, compact_checkpoint, even_ranges, plan_compaction
from restore.state_builder import NamespaceState, small_resources
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.snapshot.gc import collect_garbage
from stateserver.store import RetryingObjectStore, open_store


def test_the_live_job_wins_and_gc_reclaims_the_compactions_uploads(tmp_path: pathlib.Path) -> None:
    store = RetryingObjectStore(open_store((tmp_path / "store").as_uri()))
    job = NamespaceState(tmp_path / "job", store, "live", parallelism=4, epoch=2)
    uploaded: list[ShardCompaction] = []
    try:
        job.write_every_kind(200)
        first = job.checkpoint(1)
        plan = plan_compaction(first, even_ranges(128, 2), target_checkpoint_id=2)

        def job_commits_meanwhile(done: ShardCompaction) -> None:
            uploaded.append(done)
            if len(uploaded) == 1:
                job.write_every_kind(50)
                job.checkpoint(2)

        with concurrent.futures.ThreadPoolExecutor(4) as executor, \
                pytest.raises(CompactionConflict, match="checkpoint 2 of namespace 'live' was committed while"):
            compact_checkpoint(store, plan, expire_before_ms=None, work_dir=tmp_path / "work",
                               resources=small_resources(), executor=executor, on_shard=job_commits_meanwhile)
    finally:
        job.close()
    catalog = CheckpointCatalog(store)
    assert catalog.committed_ids("live") == [1, 2]
    assert len(catalog.load("live", 2).shards) == 4  # the job's checkpoint, not the compaction's 2 shards
    assert list((tmp_path / "work").iterdir()) == []

    compaction_keys = {key for done in uploaded for key in (
        done.handle.manifest_key, *(f.object_key for f in (*done.handle.shared_files, *done.handle.private_files)))}
    assert len(uploaded) == 2 and all(paths.parse_key(key) is not None for key in compaction_keys)
    # Uploads no checkpoint names go once older than min_age, whatever checkpoint id they carry
    # (a writer that rolled back may upload under a subsumed id): an hour later, then.
    now = datetime.datetime.now(datetime.timezone.utc)
    young = collect_garbage(store, "live", retain=2, min_age=datetime.timedelta(hours=1), now=now, dry_run=True)
    assert compaction_keys <= {item.key for item in young.kept_young}
    report = collect_garbage(store, "live", retain=2, min_age=datetime.timedelta(hours=1),
                             now=now + datetime.timedelta(hours=2), dry_run=False)
    assert compaction_keys <= {item.key for item in report.deleted}
    assert not compaction_keys & {meta.key for meta in store.list("live")}
    assert catalog.verify(catalog.load("live", 2)) == [] and catalog.verify(first) == []

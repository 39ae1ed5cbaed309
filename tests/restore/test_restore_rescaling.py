"""Rescaling restore: state of 4 shards restored into 3 and into 7, and into odd sub-ranges."""
from __future__ import annotations

import concurrent.futures
import pathlib
from collections.abc import Iterator

import pytest

from restore.state_builder import (
    STATES, NamespaceState, assert_reads, column_families, dump_shard, key_groups_in, merge_dumps, open_restored,
    small_resources,
)
from stateserver.protocol.keygroups import KeyGroupRange, ranges_for_parallelism
from stateserver.store import RetryingObjectStore, open_store
from stateserver.restore import plan_restore, restore_shard


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        yield pool


def test_four_shards_restore_into_three_and_into_seven(store_url: str, tmp_path: pathlib.Path,
                                                       executor: concurrent.futures.Executor) -> None:
    store = RetryingObjectStore(open_store(store_url))
    source = NamespaceState(tmp_path / "source", store, "rescale", parallelism=4, epoch=2)
    try:
        source.write_every_kind(4000)
        metadata = source.checkpoint(1)
        everything = source.dump()
    finally:
        source.close()
    assert sum(len(entries) for entries in everything.values()) > 20_000

    for parallelism in (3, 7):
        shards = []
        try:
            for key_groups in ranges_for_parallelism(128, parallelism):
                target = tmp_path / f"p{parallelism}" / str(key_groups)
                result = restore_shard(store, metadata, key_groups, target, resources=small_resources(),
                                       executor=executor)
                assert result.rescaled and result.reusable_handle is None
                assert result.bytes_downloaded == plan_restore(metadata, key_groups).download_bytes
                shard = open_restored(target, "rescale", key_groups)
                shards.append(shard)
                assert {s.descriptor for s in shard.states.values()} == set(STATES)
                assert shard.epoch == 2
                # Every key in the right shard ...
                assert key_groups_in(dump_shard(shard)) <= set(range(key_groups.start, key_groups.end + 1))
            # ... exactly once (merge_dumps asserts disjointness), with the value it had.
            assert merge_dumps([dump_shard(s) for s in shards]) == everything
            assert_reads(shards, source.expected)
        finally:
            for shard in shards:
                shard.close()
        leftovers = [p.name for p in (tmp_path / f"p{parallelism}").iterdir() if p.name.startswith(".")]
        assert leftovers == []  # downloads and build directories are gone


def test_a_sub_range_of_one_snapshot_shard_and_a_single_key_group(tmp_path: pathlib.Path,
                                                                  executor: concurrent.futures.Executor) -> None:
    store = open_store((tmp_path / "store").as_uri())
    source = NamespaceState(tmp_path / "source", store, "narrow", parallelism=2)
    try:
        source.write_every_kind(2000)
        metadata = source.checkpoint(4)
        everything = source.dump()
    finally:
        source.close()
    for key_groups in (KeyGroupRange(10, 20), KeyGroupRange(64, 64), KeyGroupRange(60, 70)):
        plan = plan_restore(metadata, key_groups)
        assert plan.rescaled and len(plan.sources) == (2 if key_groups.start < 64 <= key_groups.end else 1)
        target = tmp_path / str(key_groups)
        restore_shard(store, metadata, key_groups, target, resources=small_resources(), executor=executor)
        assert "state.values" in column_families(target)
        shard = open_restored(target, "narrow", key_groups)
        try:
            wanted = {family: {k: v for k, v in entries.items() if int.from_bytes(k[:2], "big") in key_groups}
                      for family, entries in everything.items()}
            assert dump_shard(shard) == wanted
            assert any(wanted.values())
        finally:
            shard.close()

"""Full restore: a shard rebuilt from its own snapshot, on file:// and on S3 (SeaweedFS)."""
from __future__ import annotations

import concurrent.futures
import pathlib
from collections.abc import Iterator

import pytest

from restore.state_builder import (
    STATES, NamespaceState, assert_reads, dump_shard, key_groups_in, merge_dumps, open_restored, small_resources,
)
from stateserver.protocol.errors import AlreadyExists, InvalidInput
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import RetryingObjectStore, open_store
from stateserver.restore import MissingObject, plan_restore, restore_shard, restore_shards
from stateserver.shard.shard import Shard


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        yield pool


def test_full_restore_round_trip_of_every_state_kind(store_url: str, tmp_path: pathlib.Path,
                                                     executor: concurrent.futures.Executor) -> None:
    store = RetryingObjectStore(open_store(store_url))
    source = NamespaceState(tmp_path / "source", store, "orders", parallelism=2, epoch=7)
    try:
        source.write_every_kind(3000)
        metadata = source.checkpoint(1)
        before = [dump_shard(shard) for shard in source.shards]
    finally:
        source.close()

    restored_dir = tmp_path / "restored"
    progress: list[int] = []
    shards = []
    for index, handle in enumerate(metadata.shards):
        key_groups = KeyGroupRange(handle.key_group_start, handle.key_group_end)
        target = restored_dir / str(key_groups)
        result = restore_shard(store, metadata, key_groups, target, resources=small_resources(), executor=executor,
                               progress=progress.append)
        assert not result.rescaled
        assert result.reusable_handle == handle  # its SSTs are now the shard's own files
        assert result.checkpoint_id == 1 and result.key_groups == key_groups
        assert result.files_downloaded == len(handle.shared_files) + len(handle.private_files)
        assert result.bytes_downloaded == plan_restore(metadata, key_groups).download_bytes
        shard = open_restored(target, "orders", key_groups)
        shards.append(shard)
        assert shard.epoch == 7  # the epoch record is kept as it was
        assert {s.descriptor for s in shard.states.values()} == set(STATES)
        assert dump_shard(shard) == before[index]
        assert key_groups_in(dump_shard(shard)) <= set(range(key_groups.start, key_groups.end + 1))
    try:
        assert sum(progress) == sum(plan_restore(metadata, s.key_groups).download_bytes for s in shards)
        assert_reads(shards, source.expected)
    finally:
        for shard in shards:
            shard.close()
    assert sorted(p.name for p in restored_dir.iterdir()) == ["0-63", "64-127"]  # no build leftovers


def test_restoring_checkpoint_n_after_n_plus_1_gives_the_state_of_n(store_url: str, tmp_path: pathlib.Path,
                                                                    executor: concurrent.futures.Executor) -> None:
    store = RetryingObjectStore(open_store(store_url))
    source = NamespaceState(tmp_path / "source", store, "clicks", parallelism=2)
    try:
        source.write_every_kind(1500)
        first = source.checkpoint(1)
        state_of_1, expected_1 = source.dump(), source.expected.copy()
        source.write_every_kind(1500)
        second = source.checkpoint(2)
        state_of_2 = source.dump()
    finally:
        source.close()
    assert state_of_1 != state_of_2
    # Checkpoint 2 references SSTs that checkpoint 1 uploaded (incremental), yet restores alone.
    assert {f.object_key for h in first.shards for f in h.shared_files} & \
        {f.object_key for h in second.shards for f in h.shared_files}

    for metadata, state, label in ((first, state_of_1, "n"), (second, state_of_2, "n+1")):
        for key_groups in (KeyGroupRange(0, 63), KeyGroupRange(0, 127)):  # full, then rescaled
            target = tmp_path / label / str(key_groups)
            result = restore_shard(store, metadata, key_groups, target, resources=small_resources(), executor=executor)
            assert result.rescaled == (key_groups == KeyGroupRange(0, 127))
            shard = open_restored(target, "clicks", key_groups)
            try:
                wanted = {family: {k: v for k, v in entries.items() if int.from_bytes(k[:2], "big") in key_groups}
                          for family, entries in state.items()}
                assert dump_shard(shard) == wanted
                if metadata is first and key_groups.end == 127:
                    assert_reads([shard], expected_1)
            finally:
                shard.close()


def test_restore_refuses_an_existing_target_and_foreign_key_groups(tmp_path: pathlib.Path,
                                                                   executor: concurrent.futures.Executor) -> None:
    store = open_store((tmp_path / "store").as_uri())
    source = NamespaceState(tmp_path / "source", store, "small", parallelism=1)
    try:
        source.write_every_kind(50)
        metadata = source.checkpoint(3)
    finally:
        source.close()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(AlreadyExists, match="exists"):
        restore_shard(store, metadata, KeyGroupRange(0, 127), existing, resources=small_resources(), executor=executor)
    with pytest.raises(InvalidInput, match="outside namespace 'small'"):
        restore_shard(store, metadata, KeyGroupRange(100, 200), tmp_path / "t", resources=small_resources(),
                      executor=executor)
    assert not (tmp_path / "t").exists()


def test_a_restored_shard_is_one_the_node_code_opens_and_writes(tmp_path: pathlib.Path,
                                                                executor: concurrent.futures.Executor) -> None:
    store = open_store((tmp_path / "store").as_uri())
    source = NamespaceState(tmp_path / "source", store, "live", parallelism=4, epoch=3)
    try:
        source.write_every_kind(400)
        metadata = source.checkpoint(5)
        everything = source.dump()
    finally:
        source.close()
    target = tmp_path / "restored"
    restore_shard(store, metadata, KeyGroupRange(0, 127), target, resources=small_resources(), executor=executor)
    shard: Shard = open_restored(target, "live", KeyGroupRange(0, 127))
    try:
        assert shard.epoch == 3  # the highest epoch of the snapshot shards it was cut from
        shard.take_ownership(4)
        assert merge_dumps([dump_shard(shard)]) == everything
    finally:
        shard.close()


def test_shards_restored_together_match_their_snapshots_and_fail_all_or_nothing(
        tmp_path: pathlib.Path, executor: concurrent.futures.Executor) -> None:
    store = RetryingObjectStore(open_store((tmp_path / "store").as_uri()))
    source = NamespaceState(tmp_path / "source", store, "many", parallelism=4)
    try:
        source.write_every_kind(2000)
        metadata = source.checkpoint(1)
        before = [dump_shard(shard) for shard in source.shards]
    finally:
        source.close()
    ranges = [KeyGroupRange(h.key_group_start, h.key_group_end) for h in metadata.shards]
    # Three full restores and one rescaled (two snapshot shards into one), all at once.
    targets = [(r, tmp_path / "ok" / str(r)) for r in ranges[:3]] + [
        (KeyGroupRange(ranges[2].start, ranges[3].end), tmp_path / "ok" / "merged")]
    progress: list[int] = []
    results = restore_shards(store, metadata, targets, resources=small_resources(), executor=executor,
                             progress=progress.append, shards_at_once=4)
    assert [r.key_groups for r in results] == [k for k, _ in targets]
    assert [r.rescaled for r in results] == [False, False, False, True]
    assert sum(progress) == sum(plan_restore(metadata, k).download_bytes for k, _ in targets)
    for (key_groups, directory), expected in zip(targets, [*before[:3], merge_dumps(before[2:])]):
        shard = open_restored(directory, "many", key_groups)
        try:
            assert dump_shard(shard) == expected
        finally:
            shard.close()

    store.delete(metadata.shards[3].shared_files[0].object_key)
    failing = [(r, tmp_path / "failing" / str(r)) for r in ranges]
    with pytest.raises(MissingObject, match=metadata.shards[3].shared_files[0].object_key):
        restore_shards(store, metadata, failing, resources=small_resources(), executor=executor)
    assert not any(directory.exists() for _, directory in failing)
    assert list((tmp_path / "failing").iterdir()) == []  # no build leftovers either

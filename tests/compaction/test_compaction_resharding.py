"""Offline compaction end to end on file:// and SeaweedFS: 4 shards into 3 and 5 with TTL cleanup,
and into the same 4 without; every output restored by the restore code and read back."""
from __future__ import annotations

import concurrent.futures
import pathlib
from collections.abc import Iterator

import pytest

from stateserver.compaction import compact_checkpoint, even_ranges, plan_compaction, target_checkpoint_id
from compaction_state import (
    ALL_STATES, EPOCH, NAMESPACE, TtlCheckpoint, build_checkpoint, entry_count, without_expired,
)
from restore.state_builder import (
    assert_reads, dump_shard, key_groups_in, merge_dumps, open_restored, small_resources,
)
from stateserver.protocol import wire
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.keygroups import KeyGroupRange, key_group_for
from stateserver.store import ObjectStore, RetryingObjectStore, open_store
from stateserver.protocol.operations import Batch, ReadOp
from stateserver.restore import restore_shard
from stateserver.shard.shard import Shard
from stateserver.shard.reads import read_batch
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        yield pool


def test_four_shards_compacted_into_three_and_five_with_ttl_cleanup(
        store_url: str, tmp_path: pathlib.Path, executor: concurrent.futures.Executor) -> None:
    store = RetryingObjectStore(open_store(store_url))
    built = build_checkpoint(tmp_path / "source", store)
    before = {meta.key: store.get(meta.key) for meta in store.list(NAMESPACE)}
    catalog = CheckpointCatalog(store)
    unexpired = without_expired(built.dump, built.cutoff_ms)
    assert 0 < entry_count(unexpired) < entry_count(built.dump)  # some TTL entries expired, some did not

    cases = [(3, built.cutoff_ms, unexpired), (5, built.cutoff_ms, unexpired), (None, None, built.dump)]
    for checkpoint_id, (shards, cutoff, expected) in enumerate(cases, start=2):
        ranges = even_ranges(128, shards) if shards else None
        plan = plan_compaction(built.metadata, ranges,
                               target_checkpoint_id=target_checkpoint_id(catalog.committed_ids(NAMESPACE), None))
        result = compact_checkpoint(store, plan, expire_before_ms=cutoff, work_dir=tmp_path / "work",
                                    resources=small_resources(), executor=executor)
        assert result.checkpoint_id == checkpoint_id
        assert catalog.committed_ids(NAMESPACE) == list(range(1, checkpoint_id + 1))
        assert (result.entries_in, result.entries_out) == (entry_count(built.dump), entry_count(expected))
        assert result.expired == entry_count(built.dump) - entry_count(expected)
        assert (result.shards_in, len(result.shards)) == (4, shards or 4)
        assert list((tmp_path / "work").iterdir()) == []  # downloads and built shards are gone

        compacted = catalog.load(NAMESPACE, checkpoint_id)
        assert [KeyGroupRange(h.key_group_start, h.key_group_end) for h in compacted.shards] == \
            (ranges or [KeyGroupRange(h.key_group_start, h.key_group_end) for h in built.metadata.shards])
        assert {h.writer_epoch for h in compacted.shards} == {EPOCH} and compacted.max_key_groups == 128
        restored = restore_every_shard(store, compacted, tmp_path / f"restored-{checkpoint_id}", executor)
        try:
            for shard in restored:
                assert shard.epoch == EPOCH
                assert {s.descriptor for s in shard.states.values()} == ALL_STATES
                assert key_groups_in(dump_shard(shard)) <= set(range(shard.key_groups.start, shard.key_groups.end + 1))
                assert_fully_compacted(shard)
            assert merge_dumps([dump_shard(s) for s in restored]) == expected  # each key once, as it was
            if cutoff is not None:
                assert_reads(restored, built.unexpired)
                assert read_lists(restored, "recent", list(built.recent)) == list(built.recent.values())
        finally:
            for shard in restored:
                shard.close()

    # The input checkpoint is untouched, byte for byte, and restores as before.
    assert {key: store.get(key) for key in before} == before
    whole = tmp_path / "input-again"
    restore_shard(store, built.metadata, KeyGroupRange(0, 127), whole, resources=small_resources(), executor=executor)
    shard = open_restored(whole, NAMESPACE, KeyGroupRange(0, 127))
    try:
        assert dump_shard(shard) == built.dump
    finally:
        shard.close()


def restore_every_shard(store: ObjectStore, metadata: cpb.CheckpointMetadata, root: pathlib.Path,
                        executor: concurrent.futures.Executor) -> list[Shard]:
    """Every shard of ``metadata`` by the full-restore path (the node's OpenShard takes the same)."""
    shards = []
    for handle in metadata.shards:
        key_groups = KeyGroupRange(handle.key_group_start, handle.key_group_end)
        result = restore_shard(store, metadata, key_groups, root / str(key_groups), resources=small_resources(),
                               executor=executor)
        assert not result.rescaled and result.reusable_handle == handle
        shards.append(open_restored(root / str(key_groups), NAMESPACE, key_groups))
    return shards


def assert_fully_compacted(shard: Shard) -> None:
    """Every SST in one level, the bottommost, and not one tombstone: no compaction debt."""
    files = shard.db.live_files()
    assert files and {f["level"] for f in files} == {6}, files
    assert sum(f["num_deletions"] for f in files) == 0


def read_lists(shards: list[Shard], state: str, keys: list[bytes]) -> list[list[bytes]]:
    found = []
    for key in keys:
        group = key_group_for(key, 128)
        shard = next(s for s in shards if group in s.key_groups)
        batch = Batch(ops=bytes([ReadOp.GET_LIST]), states=[state], state_indexes=[], keys=[key])
        (packed,) = read_batch(shard, batch)
        found.append(wire.unpack_list(packed) if packed is not None else [])
    return found


def test_a_cleanup_after_every_ttl_has_passed_leaves_no_ttl_entry_and_an_empty_shard_restores(
        tmp_path: pathlib.Path, executor: concurrent.futures.Executor) -> None:
    store = RetryingObjectStore(open_store((tmp_path / "store").as_uri()))
    built: TtlCheckpoint = build_checkpoint(tmp_path / "source", store, keys=30)
    later = built.cutoff_ms + 10 * 86_400_000
    # Key group 0 alone: with 30 keys it most likely holds nothing, and must restore all the same.
    plan = plan_compaction(built.metadata, [KeyGroupRange(0, 0), KeyGroupRange(1, 127)], target_checkpoint_id=7)
    result = compact_checkpoint(store, plan, expire_before_ms=later, work_dir=tmp_path / "work",
                                resources=small_resources(), executor=executor)
    assert result.checkpoint_id == 7
    restored = restore_every_shard(store, CheckpointCatalog(store).load(NAMESPACE, 7), tmp_path / "restored", executor)
    try:
        merged = merge_dumps([dump_shard(s) for s in restored])
        assert merged == without_expired(built.dump, later)
        assert merged["state.expiring"] == {} and merged["state.recent"] == {} and merged["state.values"] != {}
        assert result.entries_out == entry_count(merged)
    finally:
        for shard in restored:
            shard.close()

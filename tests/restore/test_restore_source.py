"""An open from a checkpoint reads the checkpoint's metadata once: the in-place check (is the open
shard still exactly that checkpoint?) and the restore that follows when it is not share it, so they
also agree on which checkpoint "latest" is. Real RocksDB shards, a real file:// store, counted.

Fails on the code before: each of them resolved the checkpoint itself, two reads of the metadata
for every shard of a failover that had been written since the checkpoint.
"""
from __future__ import annotations

import pathlib
import shutil
from typing import Any

import pytest

from restore.state_builder import NamespaceState, small_resources
from stateserver.node.checkpointing import Checkpointing, restore_source
from stateserver.shard.shard import ShardId
from stateserver.store import ObjectStore, open_store, paths

NAMESPACE = "source-reads"


class CountingStore:
    """The real store, counting the reads of checkpoint metadata."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.metadata_reads = 0

    def get(self, key: str) -> bytes:
        if key == paths.checkpoint_metadata(NAMESPACE, 1):
            self.metadata_reads += 1
        return self._store.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("checkpoint", [1, "latest"])
def test_a_shard_not_kept_in_place_is_restored_with_one_read_of_the_metadata(
        tmp_path: pathlib.Path, checkpoint: int | str) -> None:
    store = open_store((tmp_path / "store").as_uri())
    source = NamespaceState(tmp_path / "source", store, NAMESPACE, parallelism=1, epoch=3)
    counting = CountingStore(store)
    checkpointing = Checkpointing(counting, work_dir=tmp_path / "work", resources=small_resources())  # type: ignore[arg-type]
    try:
        source.write_every_kind(200)
        source.checkpoint(1)
        shard = source.shards[0]
        open_source = restore_source(checkpointing, checkpoint)
        assert open_source.in_place is not None and open_source.restore is not None
        assert open_source.in_place(shard) is None  # this node never confirmed it: not exactly the checkpoint
        prepared = open_source.restore(ShardId(NAMESPACE, shard.key_groups), tmp_path / "restored" / "0-127")
        assert prepared.checkpoint_id == 1
        shutil.rmtree(prepared.directory)
        assert counting.metadata_reads == 1
    finally:
        checkpointing.close()
        source.close()

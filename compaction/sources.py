"""The input shards of a compaction, downloaded when first needed and deleted when passed.

Each input shard is restored as it is (the full-restore path: its files, checked against their
sizes and checksums) into the work directory and opened read-only. Output shards are written in
key order, so once an output shard is done, every input shard ending at or before it is passed:
at most the inputs overlapping one output shard (and the one it shares with the next) sit on disk.
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import shutil
from collections.abc import Callable, Iterator

import rocksdict

from stateserver.protocol.keygroups import MAX_KEY_GROUPS_LIMIT, KeyGroupRange
from stateserver.store import ObjectStore
from stateserver.restore import restore_shard
from stateserver.shard.rocks import DEFAULT_COLUMN_FAMILY, RocksResources
from stateserver.shard.shard import META_COLUMN_FAMILY
from stateserver.shard.sst_files import scan_key_groups
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

Entries = Iterator[tuple[bytes, bytes]]


class SourceShard:
    """One downloaded input shard, open read-only."""

    def __init__(self, handle: cpb.ShardSnapshotHandle, directory: pathlib.Path, resources: RocksResources) -> None:
        self.handle = handle
        self.key_groups = KeyGroupRange(handle.key_group_start, handle.key_group_end)
        self.directory = directory
        self.db = resources.open_db(directory, read_only=True)
        self.families = [f for f in rocksdict.Rdict.list_cf(str(directory)) if f != META_COLUMN_FAMILY]

    def entries(self, family: str, wanted: KeyGroupRange) -> Entries:
        """Every entry of ``family`` in the key groups of ``wanted`` this shard holds, in key order
        (a key-group range is a key range)."""
        key_groups = self.key_groups.intersection(wanted)
        if family not in self.families or key_groups is None:
            return
        table = self.db if family == DEFAULT_COLUMN_FAMILY else self.db.get_column_family(family)
        try:
            yield from scan_key_groups(table, key_groups)
        finally:
            del table  # a column family view must go before its database closes

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class SourceShards:
    """The input shards of ``metadata``, each downloaded once into ``work_dir``."""

    def __init__(self, store: ObjectStore, metadata: cpb.CheckpointMetadata, work_dir: pathlib.Path, *,
                 resources: RocksResources, executor: concurrent.futures.Executor,
                 progress: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.metadata = metadata
        self.work_dir = work_dir
        self.resources = resources
        self.executor = executor
        self.progress = progress
        self.downloaded_bytes = 0
        self._open: dict[str, SourceShard] = {}

    def get(self, handle: cpb.ShardSnapshotHandle) -> SourceShard:
        source = self._open.get(handle.manifest_key)
        if source is None:
            key_groups = KeyGroupRange(handle.key_group_start, handle.key_group_end)
            directory = self.work_dir / f"source-{key_groups}"
            result = restore_shard(self.store, self.metadata, key_groups, directory, resources=self.resources,
                                   executor=self.executor, progress=self.progress)
            self.downloaded_bytes += result.bytes_downloaded
            source = self._open[handle.manifest_key] = SourceShard(handle, directory, self.resources)
        return source

    def release_through(self, key_group: int) -> None:
        """Close and delete the input shards that end at or before ``key_group``."""
        for key, source in list(self._open.items()):
            if source.key_groups.end <= key_group:
                del self._open[key]
                source.close()

    def close(self) -> None:
        self.release_through(MAX_KEY_GROUPS_LIMIT)

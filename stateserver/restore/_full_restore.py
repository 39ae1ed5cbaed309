"""Full restore: one snapshot shard has exactly the key groups asked for.

Its files, shared and private, are a RocksDB checkpoint; downloaded side by side they are the
shard's database as it was at the sync phase, writer epoch record included. Nothing is rewritten,
so the shard's SSTs are the very files uploaded and its next snapshot can reference them.
"""
from __future__ import annotations

import concurrent.futures
import pathlib

from stateserver.store import ObjectStore
from stateserver.restore._download import Downloaded, DownloadJob, SerializedProgress
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


def restore_full(store: ObjectStore, handle: cpb.ShardSnapshotHandle, directory: pathlib.Path, *,
                 executor: concurrent.futures.Executor, progress: SerializedProgress) -> Downloaded:
    """Build the shard in ``directory``, which must not exist."""
    return DownloadJob(store, handle, directory, executor=executor, progress=progress).wait()

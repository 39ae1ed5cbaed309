"""An output shard into the snapshot store, by the node's own snapshot code path.

A local RocksDB checkpoint of the rewritten shard, uploaded with nothing to reuse: every file is
new, named by ``paths`` under the new checkpoint's id (so ``stateserver gc`` recognises and can
reclaim each one), and its shard manifest is written create-only. The handle is one a full
restore takes as it is.
"""
from __future__ import annotations

import concurrent.futures
import pathlib

from stateserver.store import ObjectStore
from stateserver.shard.shard import Shard
from stateserver.snapshot import take_local_checkpoint, upload_incremental
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


def upload_shard(store: ObjectStore, shard: Shard, checkpoint_id: int, *, work_dir: pathlib.Path,
                 executor: concurrent.futures.Executor) -> cpb.ShardSnapshotHandle:
    local = take_local_checkpoint(shard, checkpoint_id, shard.epoch, work_dir)
    try:
        return upload_incremental(store, local, {}, executor).handle
    finally:
        local.release()

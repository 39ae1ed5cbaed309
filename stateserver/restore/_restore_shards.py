"""``restore_shards``: several shards of one checkpoint restored at the same time, all or nothing.

A job restores every shard it runs; one after another, each shard's last and largest files keep
the transfer pool half idle (measured in benchmarks/results/snapshot.md). Shards run on a pool of
their own, because each waits for its files on the shared transfer pool.
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import shutil
from collections.abc import Callable, Sequence

from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectStore
from stateserver.restore._download import SerializedProgress
from stateserver.restore._restore_operation import RestoreResult, restore_shard
from stateserver.shard.rocks import RocksResources
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

SHARDS_AT_ONCE = 4


def restore_shards(store: ObjectStore, metadata: cpb.CheckpointMetadata,
                   targets: Sequence[tuple[KeyGroupRange, pathlib.Path]], *, resources: RocksResources,
                   executor: concurrent.futures.Executor, progress: Callable[[int], None] | None = None,
                   shards_at_once: int = SHARDS_AT_ONCE) -> list[RestoreResult]:
    """Each ``(key_groups, directory)`` of ``targets`` restored as ``restore_shard`` does; results in
    the same order. If one fails, the others are stopped or waited for and every shard directory
    this call made is removed before the error is raised: a rerun finds none of them."""
    serialized = SerializedProgress(progress)  # one lock for every shard's progress
    with concurrent.futures.ThreadPoolExecutor(max(1, min(shards_at_once, len(targets))),
                                               thread_name_prefix="restore-shard") as shards:
        futures = [shards.submit(restore_shard, store, metadata, key_groups, directory, resources=resources,
                                 executor=executor, progress=serialized)
                   for key_groups, directory in targets]
        try:
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and f.exception() is not None), None)
            if failed is not None:
                raise failed.exception()  # type: ignore[misc]
        except BaseException:
            for future in futures:
                future.cancel()
            concurrent.futures.wait(futures)
            for future, (_, directory) in zip(futures, targets):
                if not future.cancelled() and future.exception() is None:
                    shutil.rmtree(directory, ignore_errors=True)
            raise
    return [future.result() for future in futures]

"""``restore_shard``: a shard's directory from a checkpoint, by the full or the rescaling path.

The shard is built in a hidden sibling of ``target`` and renamed into place only when complete,
so a failed restore leaves nothing at ``target`` and a reader never sees half a shard.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import pathlib
import shutil
import time
import uuid
from collections.abc import Callable

from stateserver.protocol.errors import AlreadyExists
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectStore
from stateserver.restore._download import SerializedProgress
from stateserver.restore._full_restore import restore_full
from stateserver.restore._plan import plan_restore
from stateserver.restore._rescaling_restore import restore_rescaled
from stateserver.shard.rocks import RocksResources
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.store.durable_files import sync_directory

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestoreResult:
    checkpoint_id: int
    key_groups: KeyGroupRange
    rescaled: bool
    bytes_downloaded: int
    files_downloaded: int
    seconds: float
    # After a full restore the shard's SSTs are the uploaded files themselves, so its next
    # snapshot may reference them (ShardSnapshots.seed); None after rescaling.
    reusable_handle: cpb.ShardSnapshotHandle | None


def restore_shard(store: ObjectStore, metadata: cpb.CheckpointMetadata, key_groups: KeyGroupRange,
                  target: pathlib.Path, *, resources: RocksResources, executor: concurrent.futures.Executor,
                  progress: Callable[[int], None] | None = None) -> RestoreResult:
    """Make ``target`` (which must not exist) a shard database holding exactly ``key_groups`` of
    the checkpoint ``metadata`` describes (invariant 6).

    ``progress(n)`` is told of every ``n`` bytes downloaded and checked, one call at a time,
    possibly from ``executor``'s threads. Raises MissingObject or CorruptObject naming the object
    at fault, InvalidInput for key groups outside the namespace, AlreadyExists if ``target`` exists.
    """
    started = time.perf_counter()
    if target.exists() or target.is_symlink():
        raise AlreadyExists(f"cannot restore into {target}: it exists")
    plan = plan_restore(metadata, key_groups)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    building = target.parent / f".{target.name}.restoring-{tag}"
    serialized = SerializedProgress(progress)
    try:
        if plan.rescaled:
            work_dir = target.parent / f".{target.name}.sources-{tag}"
            try:
                downloaded = restore_rescaled(store, plan, building, work_dir=work_dir, resources=resources,
                                              executor=executor, progress=serialized)
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)
        else:
            downloaded = restore_full(store, plan.sources[0], building, executor=executor, progress=serialized)
        os.rename(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    sync_directory(target.parent)
    result = RestoreResult(checkpoint_id=metadata.checkpoint_id, key_groups=key_groups, rescaled=plan.rescaled,
                           bytes_downloaded=downloaded.bytes, files_downloaded=downloaded.files,
                           seconds=time.perf_counter() - started,
                           reusable_handle=None if plan.rescaled else plan.sources[0])
    log.info("shard restored", extra={"namespace": metadata.namespace, "key_groups": str(key_groups),
                                      "checkpoint": metadata.checkpoint_id, "rescaled": plan.rescaled,
                                      "bytes": downloaded.bytes, "seconds": round(result.seconds, 3)})
    return result

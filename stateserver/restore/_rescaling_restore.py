"""Rescaling restore: the key groups asked for are cut from one or more snapshot shards.

A fresh shard is opened with every state the overlapping snapshots declare; then, one snapshot
shard at a time in key order, its files are downloaded, opened read-only, and the keys of the
key groups it shares with the new shard are copied over. The next snapshot shard downloads while
the current one is copied; each download is deleted once copied, so at most two sit on disk.

The epoch record is the highest writer epoch among the sources: as after a full restore, a writer
older than the one that took the checkpoint is refused.
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import shutil

from stateserver.protocol.errors import CorruptData
from stateserver.protocol.limits import Limits
from stateserver.store import ObjectStore
from stateserver.restore._download import Downloaded, DownloadJob, SerializedProgress
from stateserver.restore._key_range_copy import copy_key_groups
from stateserver.restore._plan import RestorePlan, snapshot_key_groups
from stateserver.shard.rocks import RocksResources
from stateserver.shard.shard import Shard, ShardId
from stateserver.protocol.states import StateDescriptor
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


def restore_rescaled(store: ObjectStore, plan: RestorePlan, directory: pathlib.Path, *, work_dir: pathlib.Path,
                     resources: RocksResources, executor: concurrent.futures.Executor,
                     progress: SerializedProgress) -> Downloaded:
    """Build the shard in ``directory`` (must not exist), downloading into ``work_dir``."""
    descriptors = union_of_states(plan)
    shard = Shard(shard_id=ShardId(plan.namespace, plan.key_groups), max_key_groups=plan.max_key_groups,
                  path=directory, resources=resources, limits=Limits())
    files = size = 0
    started: list[DownloadJob] = []

    def download(index: int) -> DownloadJob:
        job = DownloadJob(store, plan.sources[index], work_dir / f"source-{index}", executor=executor,
                          progress=progress)
        started.append(job)
        return job

    try:
        shard.take_ownership(max(h.writer_epoch for h in plan.sources))
        shard.declare_states(descriptors)
        current = download(0)
        for index, source in enumerate(plan.sources):
            downloaded = current.wait()
            following = download(index + 1) if index + 1 < len(plan.sources) else None
            files, size = files + downloaded.files, size + downloaded.bytes
            shared = snapshot_key_groups(source).intersection(plan.key_groups)
            assert shared is not None, "the plan holds only overlapping sources"
            copy_key_groups(current.directory, shared, shard, resources=resources, scratch_dir=work_dir / "sst",
                            source_name=f"snapshot shard {source.key_group_start}-{source.key_group_end} "
                                        f"of checkpoint {source.checkpoint_id}")
            shutil.rmtree(current.directory)
            if following is not None:
                current = following
    except BaseException:
        for job in started:
            job.cancel()  # no download may go on writing into a directory about to be removed
        raise
    finally:
        shard.close()  # flushes the epoch record and descriptors; ingested SSTs are already durable
    return Downloaded(files=files, bytes=size)


def union_of_states(plan: RestorePlan) -> list[StateDescriptor]:
    """Every state any source declares; the same name must mean the same kind everywhere."""
    union: dict[str, tuple[StateDescriptor, cpb.ShardSnapshotHandle]] = {}
    for handle in plan.sources:
        for message in handle.states:
            try:
                descriptor = StateDescriptor.from_proto(message)
            except ValueError as exc:
                raise CorruptData(f"shard manifest {handle.manifest_key}: {exc}") from None
            earlier = union.get(descriptor.name)
            if earlier is not None and not earlier[0].compatible_with(descriptor):
                raise CorruptData(f"checkpoint {plan.checkpoint_id} declares state {descriptor.name!r} differently "
                                  f"in shard manifests {earlier[1].manifest_key} and {handle.manifest_key}")
            union[descriptor.name] = (descriptor, handle)
    return [descriptor for descriptor, _ in union.values()]

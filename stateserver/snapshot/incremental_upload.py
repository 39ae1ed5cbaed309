"""The async phase: upload what no committed checkpoint of the shard uploaded, then the manifest.

SST files are immutable, so an SST that a confirmed checkpoint uploaded is referenced again
instead of uploaded (incremental), once a HEAD says the upload is still there with its size:
an upload that is gone (an operator's gc, a file a restore seeded that retention then took) is
uploaded again under a new name, so one lost object cannot fail every later checkpoint. Everything else in the checkpoint directory (MANIFEST,
CURRENT, OPTIONS, ...) is private to this checkpoint and uploaded every time. Files go up in
parallel; the shard manifest is written last, create-only.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import pathlib
from collections.abc import Mapping

from stateserver.store import paths
from stateserver.store.checksums import file_checksum
from stateserver.store import ObjectNotFound, ObjectStore
from stateserver.snapshot.local_checkpoint import LocalCheckpoint
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


@dataclasses.dataclass(frozen=True, kw_only=True)
class UploadResult:
    handle: cpb.ShardSnapshotHandle
    uploaded_bytes: int
    reused_bytes: int
    uploaded_files: int
    reused_files: int


def is_shared_file(name: str) -> bool:
    return name.endswith(".sst")


def upload_incremental(
    store: ObjectStore,
    checkpoint: LocalCheckpoint,
    reusable: Mapping[str, cpb.StoredFile],
    executor: concurrent.futures.Executor,
) -> UploadResult:
    """Upload ``checkpoint``; ``reusable`` maps SST names to uploads of confirmed checkpoints."""
    shared: list[cpb.StoredFile] = []
    pending: list[tuple[bool, concurrent.futures.Future[cpb.StoredFile]]] = []
    reused_bytes = 0
    files = checkpoint.files()
    candidates = {path.name: reusable[path.name] for path in files if is_shared_file(path.name)
                  and path.name in reusable and reusable[path.name].size == path.stat().st_size}
    still_there = dict(zip(candidates, executor.map(functools.partial(_is_stored, store), candidates.values())))
    for path in files:
        name = path.name
        if is_shared_file(name):
            earlier = candidates.get(name)
            if earlier is not None and still_there[name]:
                shared.append(earlier)
                reused_bytes += earlier.size
                continue
            key = paths.shared_file(checkpoint.namespace, checkpoint.checkpoint_id, name)
        else:
            key = paths.private_file(checkpoint.namespace, checkpoint.checkpoint_id, checkpoint.key_groups, name)
        pending.append((is_shared_file(name), executor.submit(_upload, store, key, path)))
    reused_files = len(shared)
    private: list[cpb.StoredFile] = []
    for is_shared, future in pending:
        (shared if is_shared else private).append(future.result())
    uploaded = [f for f in shared[reused_files:]] + private
    handle = cpb.ShardSnapshotHandle(
        namespace=checkpoint.namespace,
        key_group_start=checkpoint.key_groups.start,
        key_group_end=checkpoint.key_groups.end,
        checkpoint_id=checkpoint.checkpoint_id,
        writer_epoch=checkpoint.epoch,
        shared_files=sorted(shared, key=lambda f: f.local_name),
        private_files=sorted(private, key=lambda f: f.local_name),
        states=[s.to_proto() for s in checkpoint.states],
        max_key_groups=checkpoint.max_key_groups,
        manifest_key=paths.shard_manifest(checkpoint.namespace, checkpoint.checkpoint_id, checkpoint.key_groups),
        state_bytes=sum(f.size for f in shared) + sum(f.size for f in private),
    )
    store.put_if_absent(handle.manifest_key, handle.SerializeToString())
    return UploadResult(
        handle=handle,
        uploaded_bytes=sum(f.size for f in uploaded),
        reused_bytes=reused_bytes,
        uploaded_files=len(uploaded),
        reused_files=reused_files,
    )


def _upload(store: ObjectStore, key: str, path: pathlib.Path) -> cpb.StoredFile:
    checksum = file_checksum(path)
    size = store.put_file(key, path)
    return cpb.StoredFile(object_key=key, local_name=path.name, size=size, checksum=checksum)



def _is_stored(store: ObjectStore, stored: cpb.StoredFile) -> bool:
    try:
        return store.head(stored.object_key).size == stored.size
    except ObjectNotFound:
        return False

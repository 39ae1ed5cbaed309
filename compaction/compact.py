"""``compact_checkpoint``: a committed checkpoint rewritten into a new committed checkpoint.

For each output shard of the plan, in key order: rewrite it from the overlapping input shards
(``rewrite``), snapshot it into the store under the new checkpoint's id (``upload``), and delete
the local copy. Once every shard manifest is in the store, commit the new checkpoint create-only
(``commit``). Nothing existing is modified: the input checkpoint's objects are only read, and
every object written has a new name. A failure before the commit leaves only uncommitted uploads,
which ``stateserver gc`` reclaims. The other side of that: gc reclaims uploads of a checkpoint that
has not committed once they are older than its ``--min-age`` (default 1 h), so a compaction that
runs longer than that must not overlap a gc run (its commit would then find a manifest missing).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import pathlib
import shutil
import time
import uuid
from collections.abc import Callable

from stateserver.compaction.commit import commit_compacted
from stateserver.compaction.plan import CompactionPlan
from stateserver.compaction.rewrite import rewrite_shard
from stateserver.compaction.sources import SourceShards
from stateserver.shard.sst_files import DEFAULT_TARGET_FILE_BYTES
from stateserver.compaction.upload import upload_shard
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectStore
from stateserver.shard.rocks import RocksResources
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardCompaction:
    """One output shard, uploaded (not yet committed)."""

    key_groups: KeyGroupRange
    source_shards: int
    entries_in: int
    entries_out: int
    expired: int
    handle: cpb.ShardSnapshotHandle

    @property
    def bytes_out(self) -> int:
        return int(self.handle.state_bytes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompactionResult:
    namespace: str
    source_checkpoint_id: int
    checkpoint_id: int
    metadata_key: str
    shards_in: int
    bytes_in: int
    bytes_downloaded: int
    shards: tuple[ShardCompaction, ...]
    seconds: float

    @property
    def entries_in(self) -> int:
        return sum(s.entries_in for s in self.shards)

    @property
    def entries_out(self) -> int:
        return sum(s.entries_out for s in self.shards)

    @property
    def expired(self) -> int:
        return sum(s.expired for s in self.shards)

    @property
    def bytes_out(self) -> int:
        return sum(s.bytes_out for s in self.shards)


def compact_checkpoint(store: ObjectStore, plan: CompactionPlan, *, expire_before_ms: int | None,
                       work_dir: pathlib.Path, resources: RocksResources, executor: concurrent.futures.Executor,
                       catalog: CheckpointCatalog | None = None,
                       target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES,
                       on_shard: Callable[[ShardCompaction], None] | None = None,
                       progress: Callable[[int], None] | None = None) -> CompactionResult:
    """Carry out ``plan`` and commit its checkpoint; raises CompactionConflict if another writer
    committed that id (or a later one) first.

    ``expire_before_ms``: drop entries whose TTL expiry is at or before it (None: drop nothing).
    ``work_dir`` holds the downloads and the shard being built, removed when done.
    ``on_shard`` is told of every output shard once uploaded; ``progress(n)`` of bytes downloaded.
    """
    started = time.perf_counter()
    catalog = catalog if catalog is not None else CheckpointCatalog(store)
    root = work_dir / f".compaction-{plan.namespace}-{plan.target_checkpoint_id}-{uuid.uuid4().hex[:8]}"
    sources = SourceShards(store, plan.source, root / "sources", resources=resources, executor=executor,
                           progress=progress)
    shards: list[ShardCompaction] = []
    try:
        for output in plan.outputs:
            directory = root / f"output-{output.key_groups}"
            shard, counts = rewrite_shard(plan.source, output, sources, directory, epoch=plan.writer_epoch,
                                          expire_before_ms=expire_before_ms, resources=resources,
                                          scratch_dir=root / "sst", target_file_bytes=target_file_bytes)
            try:
                handle = upload_shard(store, shard, plan.target_checkpoint_id, work_dir=root / "checkpoints",
                                      executor=executor)
            finally:
                shard.close()
                shutil.rmtree(directory, ignore_errors=True)
            sources.release_through(output.key_groups.end)
            done = ShardCompaction(key_groups=output.key_groups, source_shards=len(output.sources),
                                   entries_in=counts.entries_in, entries_out=counts.entries_out,
                                   expired=counts.expired, handle=handle)
            shards.append(done)
            if on_shard is not None:
                on_shard(done)
    finally:
        sources.close()
        shutil.rmtree(root, ignore_errors=True)
    metadata_key = commit_compacted(catalog, plan.namespace, plan.target_checkpoint_id, [s.handle for s in shards],
                                    operator_metadata=plan.source.operator_metadata)
    result = CompactionResult(namespace=plan.namespace, source_checkpoint_id=plan.source.checkpoint_id,
                              checkpoint_id=plan.target_checkpoint_id, metadata_key=metadata_key,
                              shards_in=len(plan.source.shards), bytes_in=plan.input_bytes,
                              bytes_downloaded=sources.downloaded_bytes, shards=tuple(shards),
                              seconds=time.perf_counter() - started)
    log.info("checkpoint compacted", extra={
        "namespace": plan.namespace, "from": result.source_checkpoint_id, "checkpoint": result.checkpoint_id,
        "shards_in": result.shards_in, "shards_out": len(shards), "entries_in": result.entries_in,
        "entries_out": result.entries_out, "expired": result.expired, "bytes_in": result.bytes_in,
        "bytes_out": result.bytes_out, "seconds": round(result.seconds, 3)})
    return result

"""A node's checkpointing: its snapshot store, the snapshots of its shards, commit, restore.

One object per node, handed to the gRPC CheckpointService and to the shard registry (for
OpenShard with a restore source). The thread pools are shared by all shards of the node.
After each commit, retention runs in the background: the node keeps the last
``retained_checkpoints`` committed checkpoints of the namespace (and any a current owner restored
and has not committed past) and deletes what only older ones reference, by reference counting,
without listing the namespace. Every ``orphan_sweep_interval_s`` per namespace it runs the full
collection instead, as ``stateserver gc`` does, which also reclaims uploads nothing references.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol

from stateserver.snapshot.catalog import CheckpointCatalog, check_operator_metadata
from stateserver.protocol.errors import Fenced, NotFound
from stateserver.ownership import owner_records
from stateserver.snapshot.gc import RetentionMemo, collect_garbage, retire_checkpoints
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectStore
from stateserver.ownership.claims import Ownership
from stateserver.node.restore_figures import RestoreFigures
from stateserver.node.shard_open import InPlace, OpenSource, PreparedRestore, Restorer
from stateserver.restore import RestoreResult, plan_restore, restore_shard, union_of_states
from stateserver.restore.local_copies import LocalCopies
from stateserver.shard.rocks import RocksResources
from stateserver.shard.shard import Shard, ShardId
from stateserver.snapshot import ShardSnapshots, SnapshotStatus, UploadResult
from stateserver.snapshot.local_checkpoint import LocalCheckpoint
from stateserver.snapshot.shard_snapshots import SnapshotObserver
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

log = logging.getLogger(__name__)

# Retention after a commit leaves alone the objects of checkpoints that may still commit until
# they are this old, as `stateserver gc` does by default.
IN_FLIGHT_MIN_AGE = datetime.timedelta(hours=1)
DEFAULT_ORPHAN_SWEEP_INTERVAL_S = 3600.0


class CheckpointObserver(SnapshotObserver, Protocol):
    def observe_restore(self, seconds: float, restored_bytes: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class SnapshotOutcome:
    status: SnapshotStatus
    result: UploadResult | None
    error: str


class Checkpointing:
    def __init__(self, store: ObjectStore, *, work_dir: pathlib.Path, resources: RocksResources,
                 upload_threads: int = 8, snapshot_threads: int = 4, retained_checkpoints: int = 3,
                 orphan_sweep_interval_s: float = DEFAULT_ORPHAN_SWEEP_INTERVAL_S,
                 observer: CheckpointObserver | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.catalog = CheckpointCatalog(store)
        self.ownership = Ownership(store)
        self.work_dir = work_dir
        self.resources = resources
        # Local recovery: each shard's last confirmed (or restored) checkpoint, kept as links.
        self.local_copies = LocalCopies(work_dir / ".retained")
        self.restore_figures = RestoreFigures(lambda: (self.local_copies.used, self.local_copies.rejected))
        self.file_executor = concurrent.futures.ThreadPoolExecutor(upload_threads, thread_name_prefix="transfer")
        self.snapshot_executor = concurrent.futures.ThreadPoolExecutor(snapshot_threads, thread_name_prefix="snapshot")
        self.retained_checkpoints = retained_checkpoints
        self.observer = observer
        # One thread: collections of a namespace never overlap, and a commit never waits for one.
        self.retention_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="retention")
        self._lock = threading.Lock()
        self._shards: dict[ShardId, ShardSnapshots] = {}
        self._retention_pending: set[str] = set()
        self.orphan_sweep_interval_s = orphan_sweep_interval_s
        self._monotonic = monotonic
        # Per namespace, when the last full sweep ran (the first one is due an interval after the
        # node's first commit of it). Touched by the retention thread only.
        self._last_sweep: dict[str, float] = {}
        self._retention_memo = RetentionMemo()

    def snapshots_of(self, shard: Shard) -> ShardSnapshots:
        with self._lock:
            snapshots = self._shards.get(shard.id)
            if snapshots is None or snapshots.shard is not shard:
                # A shard reopened after a close or restore starts its bookkeeping afresh,
                # keeping only what it may still reuse.
                fresh = ShardSnapshots(shard, self.store, work_dir=self.work_dir / str(shard.id).replace("/", "_"),
                                       snapshot_executor=self.snapshot_executor, file_executor=self.file_executor,
                                       ownership=self.ownership, observer=self.observer)
                fresh.on_confirmed = self._retain
                if snapshots is not None:
                    fresh.inherit(snapshots)
                snapshots = self._shards[shard.id] = fresh
            return snapshots

    def _retain(self, local: LocalCheckpoint) -> None:
        self.local_copies.retain(local.namespace, local.key_groups, local.checkpoint_id, local.directory)

    def discarded(self, shard_id: ShardId) -> None:
        """Registry callback: the key groups left this node, and their retained copy goes."""
        self.local_copies.drop(shard_id.namespace, shard_id.key_groups)

    def _known(self, shard_id: ShardId) -> ShardSnapshots:
        with self._lock:
            snapshots = self._shards.get(shard_id)
        if snapshots is None:
            raise NotFound(f"no snapshot of shard {shard_id} was taken on this node")
        return snapshots

    # -- the checkpoint protocol ---------------------------------------------------------

    def snapshot(self, shard: Shard, checkpoint_id: int, epoch: int) -> float:
        """Sync phase; returns its duration in seconds. The upload goes on in the background."""
        return self.snapshots_of(shard).start(checkpoint_id, epoch).sync_seconds

    def outcome(self, shard_id: ShardId, checkpoint_id: int, epoch: int, timeout: float) -> SnapshotOutcome:
        snapshots = self._known(shard_id)
        status, result, error = snapshots.status(checkpoint_id, timeout)
        if result is not None and result.handle.writer_epoch != epoch:
            raise Fenced(f"the snapshot of checkpoint {checkpoint_id} of shard {shard_id} was taken by epoch "
                         f"{result.handle.writer_epoch}, not {epoch}")
        return SnapshotOutcome(status, result, error)

    def complete(self, shard_id: ShardId, checkpoint_id: int) -> None:
        self._known(shard_id).complete(checkpoint_id)

    def abort(self, shard_id: ShardId, checkpoint_id: int) -> None:
        self._known(shard_id).abort(checkpoint_id)

    def commit(self, namespace: str, checkpoint_id: int, handles: Iterable[cpb.ShardSnapshotHandle],
               *, operator_metadata: bytes = b"") -> str:
        handles = list(handles)
        check_operator_metadata(operator_metadata)  # before any store call: bad input changes nothing
        records = self.ownership.records(namespace)  # one listing, not one per shard
        for handle in handles:  # a stale writer's snapshot cannot commit, whichever node asks
            owner_records.check_not_fenced(records, namespace, shard_key_groups(handle), handle.writer_epoch)
        key = self.catalog.commit(namespace, checkpoint_id, handles, executor=self.file_executor,
                                  operator_metadata=operator_metadata)
        log.info("checkpoint committed", extra={"namespace": namespace, "checkpoint": checkpoint_id, "key": key})
        self._schedule_retention(namespace)
        return key

    def _schedule_retention(self, namespace: str) -> None:
        with self._lock:
            if namespace in self._retention_pending:
                return  # the pending collection will see this commit too
            self._retention_pending.add(namespace)
        self.retention_executor.submit(self._collect_garbage, namespace)

    def _collect_garbage(self, namespace: str) -> None:
        with self._lock:
            self._retention_pending.discard(namespace)
        now = self._monotonic()
        last = self._last_sweep.setdefault(namespace, now)
        try:
            if now - last >= self.orphan_sweep_interval_s:
                self._last_sweep[namespace] = now
                collect_garbage(self.store, namespace, retain=self.retained_checkpoints, min_age=IN_FLIGHT_MIN_AGE,
                                now=datetime.datetime.now(datetime.timezone.utc), dry_run=False,
                                memo=self._retention_memo)
            else:
                retire_checkpoints(self.store, namespace, retain=self.retained_checkpoints,
                                   memo=self._retention_memo)
        except Exception:  # retention is housekeeping: the next commit tries again
            log.exception("retention failed", extra={"namespace": namespace})

    def restored(self, shard: Shard, result: RestoreResult | None) -> None:
        """Registry callback for a shard that starts a new lineage of files.

        A full restore's files are committed uploads the shard may reuse. An empty or new shard,
        and a rescaled one, reuse nothing: RocksDB numbers files afresh in every lineage, so an
        earlier incarnation's ``000025.sst`` is another file than this one's (the fault suite's
        seed 21 restored a MANIFEST naming a foreign SST of the same name and size).
        """
        snapshots = self.snapshots_of(shard)
        if result is None:
            snapshots.start_lineage()
        elif result.reusable_handle is None:
            snapshots.forget_reusable()
        else:
            snapshots.seed(result.reusable_handle)

    def close(self) -> None:
        with self._lock:
            shards = list(self._shards.values())
        for snapshots in shards:
            snapshots.close()
        self.retention_executor.shutdown(wait=True, cancel_futures=True)  # the next commit collects again
        self.snapshot_executor.shutdown(wait=True)
        self.file_executor.shutdown(wait=True)


def _restore_locally(checkpointing: Checkpointing, handle: cpb.ShardSnapshotHandle,
                     target: pathlib.Path) -> RestoreResult | None:
    """A full restore of ``handle`` from the node's retained copy, or None (download it)."""
    started = time.perf_counter()
    if not checkpointing.local_copies.restore(handle, target):
        return None  # no fsync: a crash leaves a .restoring directory, which is swept, never served
    return RestoreResult(checkpoint_id=handle.checkpoint_id, key_groups=shard_key_groups(handle), rescaled=False,
                         bytes_downloaded=0, files_downloaded=0, seconds=time.perf_counter() - started,
                         reusable_handle=handle)


def shard_key_groups(handle: cpb.ShardSnapshotHandle) -> KeyGroupRange:
    return KeyGroupRange(handle.key_group_start, handle.key_group_end)


def restore_source(checkpointing: Checkpointing, source_checkpoint: int | str) -> OpenSource:
    """An open from ``source_checkpoint`` (an id or "latest"): restored beside the shard's
    directory, or, for a shard open here that is still exactly that checkpoint, kept in place."""
    resolved: dict[str, cpb.CheckpointMetadata] = {}

    def metadata_of(namespace: str) -> cpb.CheckpointMetadata:
        # Read once per open: a shard that is not kept is restored from the same checkpoint
        # ("latest" could otherwise move in between) without a second read of its metadata.
        if namespace not in resolved:
            resolved[namespace] = checkpointing.catalog.resolve(namespace, source_checkpoint)
        return resolved[namespace]

    restore = restore_target(checkpointing, metadata_of)

    def in_place(shard: Shard) -> InPlace | None:
        metadata = metadata_of(shard.id.namespace)
        plan = plan_restore(metadata, shard.key_groups)
        if plan.rescaled:
            return None
        handle = plan.sources[0]
        changes = checkpointing.snapshots_of(shard).exact_at(handle)
        if changes is None:
            return None
        result = RestoreResult(checkpoint_id=handle.checkpoint_id, key_groups=shard.key_groups, rescaled=False,
                               bytes_downloaded=0, files_downloaded=0, seconds=0.0, reusable_handle=handle)
        return InPlace(checkpoint_id=metadata.checkpoint_id, changes=changes,
                       states={s.name: s for s in union_of_states(plan)}, result=result,
                       on_kept=checkpointing.restore_figures.count_kept_in_place)

    return OpenSource(restore=restore, in_place=in_place)


def restore_target(checkpointing: Checkpointing, metadata_of: Callable[[str], cpb.CheckpointMetadata]) -> Restorer:
    """A restorer for the registry: builds the shard's state from the checkpoint ``metadata_of``
    gives for its namespace in a hidden ``.<range>.restoring-*`` directory beside the shard's. The
    registry swaps it in only once the open cannot fail any more, and removes it otherwise."""

    def restore(shard_id: ShardId, path: pathlib.Path) -> PreparedRestore:
        metadata = metadata_of(shard_id.namespace)
        plan = plan_restore(metadata, shard_id.key_groups)
        states = {s.name: s for s in union_of_states(plan)}  # the copy's states, without opening it
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.parent / f".{path.name}.restoring-{uuid.uuid4().hex[:8]}"
        with checkpointing.restore_figures.track():
            result = _restore_locally(checkpointing, plan.sources[0], temporary) if not plan.rescaled else None
            if result is None:
                result = restore_shard(checkpointing.store, metadata, shard_id.key_groups, temporary,
                                       resources=checkpointing.resources, executor=checkpointing.file_executor)
                checkpointing.restore_figures.count_download()
                if result.reusable_handle is not None:  # the next restore of it here needs no download
                    checkpointing.local_copies.retain_links_of(result.reusable_handle, temporary)
        if checkpointing.observer is not None:
            checkpointing.observer.observe_restore(result.seconds, result.bytes_downloaded)
        log.info("shard restored", extra={"namespace": shard_id.namespace, "shard": str(shard_id),
                                          "checkpoint": metadata.checkpoint_id, "rescaled": result.rescaled,
                                          "bytes": result.bytes_downloaded,
                                          "source": "local" if result.files_downloaded == 0 else "download"})
        return PreparedRestore(directory=temporary, checkpoint_id=metadata.checkpoint_id, result=result,
                               states=states)

    return restore

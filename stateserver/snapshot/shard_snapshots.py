"""A shard's snapshots on its node: those in flight, and the uploads later ones may reuse.

Only uploads of a checkpoint the engine confirmed (notify complete) are reused, never those
of a checkpoint still in flight or aborted (invariant 3, FLINK-25395's race).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import logging
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

from stateserver.protocol.errors import InvalidInput, NotFound
from stateserver.store import ObjectStore
from stateserver.ownership.claims import Ownership
from stateserver.shard.shard import Shard
from stateserver.snapshot.incremental_upload import UploadResult, upload_incremental
from stateserver.snapshot.local_checkpoint import LocalCheckpoint, take_local_checkpoint
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

log = logging.getLogger(__name__)


class SnapshotStatus(enum.Enum):
    UPLOADING = "uploading"
    DURABLE = "durable"
    FAILED = "failed"


class SnapshotObserver(Protocol):
    """Told the figures of every snapshot (NodeMetrics is one)."""

    def observe_checkpoint_sync(self, seconds: float) -> None: ...

    def observe_checkpoint_async(self, seconds: float, uploaded_bytes: int, reused_bytes: int) -> None: ...


@dataclasses.dataclass
class _InFlight:
    local: LocalCheckpoint
    upload: concurrent.futures.Future[UploadResult]


class ShardSnapshots:
    def __init__(self, shard: Shard, store: ObjectStore, *, work_dir: pathlib.Path,
                 snapshot_executor: concurrent.futures.Executor, file_executor: concurrent.futures.Executor,
                 ownership: Ownership | None = None, observer: SnapshotObserver | None = None) -> None:
        """``snapshot_executor`` runs one task per snapshot, which waits on file transfers run
        by ``file_executor``: two pools, so that waiting tasks cannot starve the transfers."""
        self.shard = shard
        self.store = store
        self.work_dir = work_dir
        self.snapshot_executor = snapshot_executor
        self.file_executor = file_executor
        self.ownership = ownership
        self.observer = observer
        # Takes the local copy of each checkpoint confirmed here (local recovery keeps it);
        # without one, the copy is released like any other.
        self.on_confirmed: Callable[[LocalCheckpoint], None] | None = None
        self._lock = threading.Lock()
        self._in_flight: dict[int, _InFlight] = {}
        # SST name -> upload, from the last checkpoint the engine confirmed.
        self._confirmed: dict[str, cpb.StoredFile] = {}
        self._confirmed_id = 0
        # The last checkpoint the shard was exactly (confirmed here, or restored from), and the
        # shard's write turns then: while they stay the same, the shard is still exactly it.
        self._exact: tuple[cpb.ShardSnapshotHandle, int] | None = None

    def inherit(self, earlier: ShardSnapshots) -> None:
        """Carry over what a previous incarnation of the same shard (closed, reopened) may reuse."""
        with earlier._lock:
            self._confirmed, self._confirmed_id = dict(earlier._confirmed), earlier._confirmed_id

    def forget_reusable(self) -> None:
        """After a rescaling restore the shard's files are new: nothing uploaded before matches."""
        with self._lock:
            self._confirmed = {}
            self._exact = None

    def start_lineage(self) -> None:
        """An empty or new shard: nothing was uploaded or confirmed for its files yet."""
        with self._lock:
            self._confirmed, self._confirmed_id = {}, 0
            self._exact = None

    def seed(self, handle: cpb.ShardSnapshotHandle) -> None:
        """After a restore from ``handle``, its files are committed uploads of this shard's files."""
        with self._lock:
            self._confirmed = {f.local_name: f for f in handle.shared_files}
            self._confirmed_id = handle.checkpoint_id
            self._exact = (handle, self.shard.changes)  # seeded before the restored shard serves

    def exact_at(self, handle: cpb.ShardSnapshotHandle) -> int | None:
        """The shard's write turns (``Shard.changes``) at which its state was exactly ``handle``'s
        (the same handle: checkpoint, range and files), or None if it never was (as far as this
        node knows). The caller compares them with the shard's turns under its write lock."""
        with self._lock:
            if self._exact is None or self._exact[0] != handle:
                return None
            return self._exact[1]

    def start(self, checkpoint_id: int, epoch: int) -> LocalCheckpoint:
        """Sync phase, then the upload in the background. Returns once the cut is taken."""
        with self._lock:
            if checkpoint_id <= self._confirmed_id:
                raise InvalidInput(f"checkpoint {checkpoint_id} of shard {self.shard.id} is not newer than "
                                   f"the confirmed checkpoint {self._confirmed_id}")
            if checkpoint_id in self._in_flight:
                raise InvalidInput(f"checkpoint {checkpoint_id} of shard {self.shard.id} was already taken")
            local = take_local_checkpoint(self.shard, checkpoint_id, epoch, self.work_dir)
            reusable = dict(self._confirmed)
            upload = self.snapshot_executor.submit(self._upload, local, reusable)
            self._in_flight[checkpoint_id] = _InFlight(local, upload)
        if self.observer is not None:
            self.observer.observe_checkpoint_sync(local.sync_seconds)
        log.info("snapshot taken", extra={"namespace": local.namespace, "shard": str(self.shard.id),
                                          "checkpoint": checkpoint_id, "sync_ms": round(local.sync_seconds * 1000, 2)})
        return local

    def _upload(self, local: LocalCheckpoint, reusable: dict[str, cpb.StoredFile]) -> UploadResult:
        started = time.monotonic()
        try:
            if self.ownership is not None:  # a fenced node uploads nothing
                self.ownership.check(local.namespace, local.key_groups, local.epoch)
            result = upload_incremental(self.store, local, reusable, self.file_executor)
        except Exception:
            log.exception("snapshot upload failed", extra={"shard": str(self.shard.id), "checkpoint": local.checkpoint_id})
            raise
        if self.observer is not None:
            self.observer.observe_checkpoint_async(time.monotonic() - started, result.uploaded_bytes,
                                                   result.reused_bytes)
        log.info("snapshot durable", extra={"shard": str(self.shard.id), "checkpoint": local.checkpoint_id,
                                            "uploaded_bytes": result.uploaded_bytes, "reused_bytes": result.reused_bytes})
        return result

    def status(self, checkpoint_id: int, timeout: float) -> tuple[SnapshotStatus, UploadResult | None, str]:
        with self._lock:
            in_flight = self._in_flight.get(checkpoint_id)
        if in_flight is None:
            raise NotFound(f"no snapshot of checkpoint {checkpoint_id} for shard {self.shard.id} on this node")
        try:
            result = in_flight.upload.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return SnapshotStatus.UPLOADING, None, ""
        except Exception as exc:
            return SnapshotStatus.FAILED, None, f"{type(exc).__name__}: {exc}"
        return SnapshotStatus.DURABLE, result, ""

    def complete(self, checkpoint_id: int) -> None:
        """The checkpoint is committed: its uploads may be reused; older snapshots are subsumed."""
        with self._lock:
            in_flight = self._in_flight.get(checkpoint_id)
            if in_flight is not None and in_flight.upload.done() and in_flight.upload.exception() is None:
                handle = in_flight.upload.result().handle
                if checkpoint_id > self._confirmed_id:
                    self._confirmed = {f.local_name: f for f in handle.shared_files}
                    self._confirmed_id = checkpoint_id
                    self._exact = (handle, in_flight.local.changes)
                    if self.on_confirmed is not None:
                        del self._in_flight[checkpoint_id]
                        self.on_confirmed(in_flight.local)
            for other in [c for c in self._in_flight if c <= checkpoint_id]:
                self._release(other)

    def abort(self, checkpoint_id: int) -> None:
        with self._lock:
            if checkpoint_id in self._in_flight:
                self._release(checkpoint_id)

    def _release(self, checkpoint_id: int) -> None:
        in_flight = self._in_flight.pop(checkpoint_id)
        # The local copy goes when the upload is over; an upload cannot be interrupted halfway.
        in_flight.upload.add_done_callback(lambda _: in_flight.local.release())

    def close(self) -> None:
        with self._lock:
            for checkpoint_id in list(self._in_flight):
                self._release(checkpoint_id)

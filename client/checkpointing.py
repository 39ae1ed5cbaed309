"""Checkpoint hooks for stream operators, shaped like Flink's CheckpointedFunction and CheckpointListener.

An operator subtask embeds a ``KeyedStateBackend``; an engine without a checkpoint coordinator of
its own uses ``CheckpointCoordinator`` to commit and to recover::

    coordinator = CheckpointCoordinator(client, "wordcount")
    subtasks = [KeyedStateBackend(client, "wordcount", key_groups=r) for r in ranges_for_parallelism(128, 2)]
    recovery = coordinator.recover(subtasks)             # a new epoch; the latest checkpoint, or empty
    offset = decode(recovery.metadata)                   # where the source resumes (b"" on a first start)
    ...                                                  # process through subtask.writer's state handles
    checkpoint_id = coordinator.next_checkpoint_id()
    for subtask in subtasks:                             # at each subtask's barrier
        subtask.snapshot_state(checkpoint_id)            # flush + sync phase; uploads go on in the background
    coordinator.complete(checkpoint_id, subtasks, metadata=encode(offset))  # await durable, commit, notify

After any ``StateServerError`` the job calls ``recover(subtasks)`` again: the state handles it
holds stay valid, rebound to the restored shards on the nodes that own them now.

Epochs: every (re)start of a job is an attempt with a higher epoch than any before it.
``recover`` allocates one from the snapshot store (``StateClient.next_epoch``), so no counter is
kept by the job; an engine with attempt numbers of its own may still pass ``epoch=`` and call
``initialize``. Opening the shards at that epoch fences the older attempt's writers, whose
snapshots can then neither become durable nor commit (DESIGN.md invariant 5).

Checkpoint ids of attempt ``E`` are ``E * 2**32 + 1, + 2, ...``: ids only grow across restarts
with no counter kept anywhere, as the node requires (an id at or below the latest committed one is
subsumed); epochs therefore stay below 2**32 (the nodes' MAX_EPOCH). A fresh start
(``restore=None``) opens every shard with ``restore="empty"``: the job starts from nothing,
whatever earlier attempts wrote or retention kept, so a job that failed before its first
checkpoint starts again from nothing, not from what it wrote.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Collection, Sequence
from typing import Literal

from stateserver.client._client import KeyGroups, StateClient, _ranges
from stateserver.client._checkpoint_info import CheckpointInfo
from stateserver.client._errors import FencedError, InvalidArgumentError, NotFoundError, ShardNotOpenError, StateServerError
from stateserver.client._writer import Writer
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

_IDS_PER_EPOCH = 1 << 32
_SUBTASKS_AT_ONCE = 32  # subtasks rebinding at once in a recover (each opens its shards in parallel)

Restore = int | Literal["latest"] | None


def first_checkpoint_id(epoch: int) -> int:
    """The first checkpoint id of the attempt at ``epoch`` (ids of later attempts are higher)."""
    if not 0 < epoch < _IDS_PER_EPOCH:
        raise InvalidArgumentError(f"epochs run from 1 to {_IDS_PER_EPOCH - 1}, not {epoch}")
    return epoch * _IDS_PER_EPOCH + 1


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Recovery:
    """What ``recover`` restored: the new attempt's epoch, the checkpoint (None: nothing was
    committed yet, the state starts empty) and the metadata committed with it (b"" if none)."""

    epoch: int
    checkpoint_id: int | None
    metadata: bytes


def latest_checkpoint(client: StateClient, namespace: str) -> CheckpointInfo | None:
    """The namespace's latest committed checkpoint, or None if it has none."""
    try:
        return client.checkpoint_metadata(namespace, "latest")
    except NotFoundError:
        return None


class KeyedStateBackend:
    """One operator subtask's keyed state: the shards of its key groups, owned at ``epoch``
    (None until ``recover`` allocates one)."""

    def __init__(self, client: StateClient, namespace: str, *, key_groups: KeyGroups, epoch: int | None = None,
                 await_timeout: float = 300.0) -> None:
        self.client = client
        self.namespace = namespace
        self.key_groups = _ranges(key_groups)
        self.epoch = epoch
        self.await_timeout = await_timeout
        self._writer: Writer | None = None

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise ShardNotOpenError("initialize() the backend before using its state")
        return self._writer

    def initialize(self, restore: Restore = None) -> Writer:
        """Open the subtask's shards at its epoch, fencing older attempts.

        ``restore``: a committed checkpoint id, or ``"latest"``, restores exactly that state;
        None is a fresh start from empty state, whatever the namespace held before.
        """
        if self.epoch is None:
            raise InvalidArgumentError("this backend has no epoch: pass epoch= or call recover()")
        self._writer = self.client.open_writer(self.namespace, key_groups=self.key_groups, epoch=self.epoch,
                                               restore="empty" if restore is None else restore)
        return self._writer

    def rebind(self, epoch: int, restore: int | str) -> Writer:
        """Own the subtask's shards at ``epoch``, restored from ``restore`` (a checkpoint id,
        "latest" or "empty"), on the nodes that own them now. A writer already open stays the
        same object, so the state handles the operator holds go on working."""
        if self._writer is None:
            self._writer = self.client.open_writer(self.namespace, key_groups=self.key_groups, epoch=epoch,
                                                   restore=restore)  # type: ignore[arg-type]
        else:
            self.client.reopen(self._writer, restore=restore, epoch=epoch)  # type: ignore[arg-type]
        self.epoch = epoch
        return self._writer

    def held_on(self, addresses: Collection[str]) -> bool:
        """Whether any of the subtask's shards was last open on one of these nodes."""
        return self._writer is not None and any(s.connection.address in addresses for s in self._writer.sessions)

    def recover(self) -> Recovery:
        """A job of this one subtask: a new epoch, then its shards from the latest committed
        checkpoint (empty if none). Jobs of several subtasks use ``CheckpointCoordinator.recover``,
        which gives them one epoch."""
        epoch = self.client.next_epoch(self.namespace)
        latest = latest_checkpoint(self.client, self.namespace)
        self.rebind(epoch, latest.checkpoint_id if latest is not None else "empty")
        return _recovery(epoch, latest)

    # -- CheckpointedFunction / CheckpointListener -----------------------------------------

    def snapshot_state(self, checkpoint_id: int) -> float:
        """At the barrier: flush, then the sync phase on every shard. Returns the longest sync
        pause in ms; the uploads go on on the nodes while the operator keeps processing."""
        return self.writer.snapshot(checkpoint_id)

    def await_durable(self, checkpoint_id: int) -> list[cpb.ShardSnapshotHandle]:
        """The async phase's outcome: the shards' durable snapshot handles, for the commit."""
        return self.writer.await_snapshot(checkpoint_id, timeout=self.await_timeout)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """The checkpoint is committed: its uploads may be reused by the next one."""
        self.writer.notify_checkpoint_complete(checkpoint_id)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """The checkpoint will never commit: the nodes drop its local copies and uploads."""
        self.writer.notify_checkpoint_aborted(checkpoint_id)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class CheckpointCoordinator:
    """Commits a namespace's checkpoints for engines that have no coordinator of their own.

    It hands out checkpoint ids for its attempt's ``epoch``, collects the durable shard handles
    of every subtask, commits once all of them are durable (the node checks that their key-group
    ranges tile the namespace), then tells every subtask; on any failure it aborts. ``recover``
    starts a new attempt: without an ``epoch`` here, call it before anything else.
    """

    def __init__(self, client: StateClient, namespace: str, *, epoch: int | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.epoch = epoch
        self._next_id = first_checkpoint_id(epoch) if epoch is not None else None

    def next_checkpoint_id(self) -> int:
        if self._next_id is None:
            raise ShardNotOpenError("the coordinator has no attempt yet: call recover() first")
        checkpoint_id, self._next_id = self._next_id, self._next_id + 1
        return checkpoint_id

    def recover(self, subtasks: Sequence[KeyedStateBackend]) -> Recovery:
        """Start a new attempt: allocate the next epoch, reopen every subtask's shards from the
        latest committed checkpoint (or empty if none is committed yet) on the nodes that own them
        now, and rebind the writers the subtasks already hold. Returns the checkpoint restored
        and the metadata committed with it, so the source can rewind to its offsets.

        Call it to start a job and again after any failure; if it fails itself (another node
        lost meanwhile), call it again: each call fences the attempts before it.
        """
        epoch = self.client.next_epoch(self.namespace)
        # The id is read before the opens and restored by id, so the state and the metadata
        # returned are of the same checkpoint even if a fenced attempt commits one meanwhile.
        latest = latest_checkpoint(self.client, self.namespace)
        restore = latest.checkpoint_id if latest is not None else "empty"
        # Every subtask at once: the shards of a lost node restore in parallel on the nodes that
        # take them over (the client bounds the opens in flight per node). The first error is
        # raised once every rebind has ended, so none goes on behind the next recover.
        # The shards of a lost node are downloaded where they go; the others are kept or relinked in
        # milliseconds. Those quick rebinds go first (shortest first), so they do not trail behind
        # the downloads for a free open slot (ClientSettings.opens_per_node) at the end.
        unavailable = self.client.unavailable
        ordered = sorted(subtasks, key=lambda subtask: subtask.held_on(unavailable))
        with concurrent.futures.ThreadPoolExecutor(min(len(subtasks), _SUBTASKS_AT_ONCE) or 1,
                                                   thread_name_prefix="recover") as pool:
            list(pool.map(lambda subtask: subtask.rebind(epoch, restore), ordered))
        self.epoch, self._next_id = epoch, first_checkpoint_id(epoch)
        return _recovery(epoch, latest)

    def initialize(self, subtasks: Sequence[KeyedStateBackend], restore: Restore = None) -> None:
        """Open every subtask: from checkpoint ``restore`` (an id or "latest"), or empty (None)."""
        self._check_epochs(subtasks)
        for subtask in subtasks:
            subtask.initialize(restore)

    def checkpoint(self, subtasks: Sequence[KeyedStateBackend], *, checkpoint_id: int | None = None,
                   metadata: bytes = b"") -> int:
        """A checkpoint with every subtask's barrier here and now, committed with ``metadata``
        (the source's offsets at the barrier); returns its id once committed."""
        checkpoint_id = self.next_checkpoint_id() if checkpoint_id is None else checkpoint_id
        try:
            for subtask in subtasks:
                subtask.snapshot_state(checkpoint_id)
        except BaseException:
            self._abort(checkpoint_id, subtasks)
            raise
        self.complete(checkpoint_id, subtasks, metadata=metadata)
        return checkpoint_id

    def complete(self, checkpoint_id: int, subtasks: Sequence[KeyedStateBackend], *, metadata: bytes = b"") -> str:
        """After every subtask's ``snapshot_state(checkpoint_id)``: wait until all their shards are
        durable, commit with ``metadata`` (at most 1 MiB, returned by ``recover``), notify every
        subtask. Returns the checkpoint's metadata key."""
        try:
            self._check_epochs(subtasks)
            handles = [handle for subtask in subtasks for handle in subtask.await_durable(checkpoint_id)]
            key = self.client.commit_checkpoint(self.namespace, checkpoint_id, handles,
                                                writers=[subtask.writer for subtask in subtasks], metadata=metadata)
        except BaseException:
            self._abort(checkpoint_id, subtasks)
            raise
        for subtask in subtasks:
            subtask.notify_checkpoint_complete(checkpoint_id)
        return key

    def _check_epochs(self, subtasks: Sequence[KeyedStateBackend]) -> None:
        stale = [subtask for subtask in subtasks if subtask.epoch != self.epoch]
        if stale:
            raise FencedError(f"subtasks of epochs {sorted({s.epoch for s in stale}, key=str)} cannot take part in "
                              f"checkpoints of the attempt at epoch {self.epoch}")

    @staticmethod
    def _abort(checkpoint_id: int, subtasks: Sequence[KeyedStateBackend]) -> None:
        for subtask in subtasks:
            with contextlib.suppress(StateServerError, RuntimeError):  # fenced or never opened: nothing to drop
                subtask.notify_checkpoint_aborted(checkpoint_id)


def _recovery(epoch: int, latest: CheckpointInfo | None) -> Recovery:
    if latest is None:
        return Recovery(epoch=epoch, checkpoint_id=None, metadata=b"")
    return Recovery(epoch=epoch, checkpoint_id=latest.checkpoint_id, metadata=latest.metadata)

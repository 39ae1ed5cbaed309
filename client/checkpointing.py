"""Checkpoint hooks for stream operators, shaped like Flink's CheckpointedFunction and CheckpointListener.

An operator subtask embeds a ``KeyedStateBackend``; an engine without a checkpoint coordinator of
its own uses ``CheckpointCoordinator`` to commit::

    coordinator = CheckpointCoordinator(client, "wordcount", epoch=attempt)
    subtasks = [KeyedStateBackend(client, "wordcount", key_groups=r, epoch=attempt)
                for r in ranges_for_parallelism(128, 2)]
    coordinator.initialize(subtasks, restore="latest")   # or None: a fresh, empty start
    ...                                                  # process through subtask.writer's state handles
    checkpoint_id = coordinator.next_checkpoint_id()
    for subtask in subtasks:                             # at each subtask's barrier
        subtask.snapshot_state(checkpoint_id)            # flush + sync phase; uploads go on in the background
    coordinator.complete(checkpoint_id, subtasks)        # await durable, commit, notify complete

Epochs: every (re)start of a job is an attempt with a higher epoch than any before it (the
caller passes the attempt number). Opening the shards at that epoch fences the older attempt's
writers, whose snapshots can then neither become durable nor commit (DESIGN.md invariant 5).

Checkpoint ids of attempt ``E`` are ``E * 2**32 + 1, + 2, ...``: ids only grow across restarts
with no counter kept anywhere, as the node requires (an id at or below the latest committed one is
subsumed); epochs therefore stay below 2**32 (the nodes' MAX_EPOCH). A fresh start
(``restore=None``) opens every shard with ``restore="empty"``: the job starts from nothing,
whatever earlier attempts wrote or retention kept, so a job that failed before its first
checkpoint starts again from nothing, not from what it wrote.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

from client._client import KeyGroups, StateClient, _ranges
from client._errors import FencedError, InvalidArgumentError, ShardNotOpenError, StateServerError
from client._writer import Writer
from stateserver.v1 import checkpoint_pb2 as cpb

_IDS_PER_EPOCH = 1 << 32

Restore = int | Literal["latest"] | None


def first_checkpoint_id(epoch: int) -> int:
    """The first checkpoint id of the attempt at ``epoch`` (ids of later attempts are higher)."""
    if not 0 < epoch < _IDS_PER_EPOCH:
        raise InvalidArgumentError(f"epochs run from 1 to {_IDS_PER_EPOCH - 1}, not {epoch}")
    return epoch * _IDS_PER_EPOCH + 1


class KeyedStateBackend:
    """One operator subtask's keyed state: the shards of its key groups, owned at ``epoch``."""

    def __init__(self, client: StateClient, namespace: str, *, key_groups: KeyGroups, epoch: int,
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
        self._writer = self.client.open_writer(self.namespace, key_groups=self.key_groups, epoch=self.epoch,
                                               restore="empty" if restore is None else restore)
        return self._writer

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
    ranges tile the namespace), then tells every subtask; on any failure it aborts.
    """

    def __init__(self, client: StateClient, namespace: str, *, epoch: int) -> None:
        self.client = client
        self.namespace = namespace
        self.epoch = epoch
        self._next_id = first_checkpoint_id(epoch)

    def next_checkpoint_id(self) -> int:
        checkpoint_id, self._next_id = self._next_id, self._next_id + 1
        return checkpoint_id

    def initialize(self, subtasks: Sequence[KeyedStateBackend], restore: Restore = None) -> None:
        """Open every subtask: from checkpoint ``restore`` (an id or "latest"), or empty (None)."""
        self._check_epochs(subtasks)
        for subtask in subtasks:
            subtask.initialize(restore)

    def checkpoint(self, subtasks: Sequence[KeyedStateBackend], *, checkpoint_id: int | None = None) -> int:
        """A checkpoint with every subtask's barrier here and now; returns its id once committed."""
        checkpoint_id = self.next_checkpoint_id() if checkpoint_id is None else checkpoint_id
        try:
            for subtask in subtasks:
                subtask.snapshot_state(checkpoint_id)
        except BaseException:
            self._abort(checkpoint_id, subtasks)
            raise
        self.complete(checkpoint_id, subtasks)
        return checkpoint_id

    def complete(self, checkpoint_id: int, subtasks: Sequence[KeyedStateBackend]) -> str:
        """After every subtask's ``snapshot_state(checkpoint_id)``: wait until all their shards are
        durable, commit, notify every subtask. Returns the checkpoint's metadata key."""
        try:
            self._check_epochs(subtasks)
            handles = [handle for subtask in subtasks for handle in subtask.await_durable(checkpoint_id)]
            key = self.client.commit_checkpoint(self.namespace, checkpoint_id, handles,
                                                writers=[subtask.writer for subtask in subtasks])
        except BaseException:
            self._abort(checkpoint_id, subtasks)
            raise
        for subtask in subtasks:
            subtask.notify_checkpoint_complete(checkpoint_id)
        return key

    def _check_epochs(self, subtasks: Sequence[KeyedStateBackend]) -> None:
        stale = [subtask for subtask in subtasks if subtask.epoch != self.epoch]
        if stale:
            raise FencedError(f"subtasks of epochs {sorted({s.epoch for s in stale})} cannot take part in "
                              f"checkpoints of the attempt at epoch {self.epoch}")

    @staticmethod
    def _abort(checkpoint_id: int, subtasks: Sequence[KeyedStateBackend]) -> None:
        for subtask in subtasks:
            with contextlib.suppress(StateServerError, RuntimeError):  # fenced or never opened: nothing to drop
                subtask.notify_checkpoint_aborted(checkpoint_id)

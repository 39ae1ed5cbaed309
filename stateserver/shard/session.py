"""A shard's writer session: the order its batches are applied in, and whether one failed.

Batches numbered by the writer are applied in order (``turn``), whatever gRPC thread receives
them; each registers as arrived (``arrival``) before it is decoded, so that its successors wait
for it instead of being refused as out of order. A session is all or nothing (invariant 9): once a
sequenced batch fails, every later write of the session is refused until the writer reopens.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from stateserver.protocol.errors import InvalidInput, OutOfOrder, SessionFailed, ShardNotOpen

if TYPE_CHECKING:
    from stateserver.shard.shard import ShardId

# How long a batch waits for a predecessor that has not arrived before it is refused as out of order.
ARRIVAL_GRACE_SECONDS = 0.02


class WriterSession:
    """One writer session's sequencing: what it applied, which batches arrived, whether one failed.

    A session starts at every open of the shard; its batches are numbered from 1.
    """

    def __init__(self) -> None:
        self.applied_sequence = 0
        self.arrived: set[int] = set()  # batches whose handler runs: they reach their turn without the network
        self.failure = ""  # "batch N failed: ..." once a sequenced batch failed; never cleared

    def fail(self, sequence: int, cause: BaseException) -> None:
        if not self.failure:
            text = str(cause) or type(cause).__name__
            self.failure = f"batch {sequence} failed: {text[:300]}"


@dataclasses.dataclass
class Arrival:
    """A sequenced batch whose handler runs, registered before it is decoded."""

    session: WriterSession
    sequence: int
    left: bool = False


class WriterTurns:
    """The part of ``Shard`` that orders its writer's batches; the shard sets the attributes."""

    id: ShardId
    write_lock: threading.RLock
    _turns: threading.Condition  # on write_lock: a batch waits here for its turn
    _arrivals_lock: threading.Lock  # arrivals register without waiting for the write lock
    session: WriterSession
    check_writer: Callable[[int], None]  # raises unless the epoch owns the open shard
    # Write turns taken (under the write lock), failed ones included: while it stays the same, the
    # shard's state does not change, so an open may keep the shard in place (node.shard_open).
    changes: int

    def check_session(self) -> None:
        """Refuse what would build on a failed session (writes, snapshots)."""
        if self.session.failure:
            raise SessionFailed(f"shard {self.id}: {self.session.failure}; reopen the writer from a checkpoint")

    @contextlib.contextmanager
    def arrival(self, sequence: int) -> Iterator[Arrival | None]:
        """Register batch ``sequence`` as arrived for as long as its handler runs (None: unsequenced)."""
        if not sequence:
            yield None
            return
        arrival = Arrival(self.session, sequence)
        with self._arrivals_lock:
            arrival.session.arrived.add(sequence)
        try:
            yield arrival
        finally:
            if not arrival.left:  # it never reached its turn: batches waiting for it must look again
                with self.write_lock:
                    self._leave(arrival)
                    self._turns.notify_all()

    def _leave(self, arrival: Arrival) -> None:
        with self._arrivals_lock:
            arrival.session.arrived.discard(arrival.sequence)
        arrival.left = True

    @contextlib.contextmanager
    def turn(self, sequence: int, epoch: int, arrival: Arrival | None = None,
             timeout: float = 30.0) -> Iterator[None]:
        """Hold the write lock for batch ``sequence`` once every earlier batch was applied.

        Every write is checked here, under the lock, against the current epoch and session.
        A batch waits only for predecessors that arrived (their handlers run); one whose
        predecessor has not arrived within ARRIVAL_GRACE_SECONDS is refused with OutOfOrder, and
        the writer resends it. A sequenced batch that fails (other than out of order) fails its session: every
        later write of the session is refused. A batch uses its turn even when it fails.
        """
        with self.write_lock:
            session = self.session
            try:
                self._wait_for_turn(sequence, epoch, arrival, timeout)
            except BaseException:
                if arrival is not None:
                    self._leave(arrival)
                    self._turns.notify_all()
                raise
            session = self.session  # the one checked: the session may have changed while waiting
            self.changes += 1  # before the write: a batch that fails halfway changed the state too
            try:
                yield
            except BaseException as exc:
                if sequence:
                    session.fail(sequence, exc)
                raise
            finally:
                if arrival is not None:
                    self._leave(arrival)
                if sequence:
                    session.applied_sequence = sequence
                    self._turns.notify_all()

    def _wait_for_turn(self, sequence: int, epoch: int, arrival: Arrival | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        grace_ends: float | None = None
        while True:
            self.check_writer(epoch)
            session = self.session
            if arrival is not None and arrival.session is not session:
                raise ShardNotOpen(f"shard {self.id} was reopened while batch {sequence} waited; "
                                   "its writer session has ended")
            self.check_session()
            if not sequence or sequence == session.applied_sequence + 1:
                return
            if sequence <= session.applied_sequence:
                error = InvalidInput(f"shard {self.id}: batch {sequence} was applied before")
                session.fail(sequence, error)
                raise error
            with self._arrivals_lock:
                waiting_for = sum(1 for s in session.arrived if session.applied_sequence < s < sequence)
            now = time.monotonic()
            if waiting_for < sequence - session.applied_sequence - 1:
                # gRPC reads and decodes a request on the handler's thread, so a batch sent right
                # after another often starts first: a predecessor gets a moment to arrive.
                grace_ends = grace_ends or now + ARRIVAL_GRACE_SECONDS
                if now >= grace_ends:
                    raise OutOfOrder(f"shard {self.id}: batch {sequence} arrived before batch "
                                     f"{session.applied_sequence + 1}; resend it after batch {sequence - 1}")
                self._turns.wait(grace_ends - now)
                continue
            if now >= deadline:
                raise OutOfOrder(f"shard {self.id}: batch {sequence} waited {timeout} s for batch "
                                 f"{session.applied_sequence + 1}; resend it after batch {sequence - 1}")
            self._turns.wait(deadline - now)  # bounded by the work of batches that arrived, not by the network

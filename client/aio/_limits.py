"""A bound on the operations an asyncio shard session has accepted and not yet answered: the
waiting, in arrival order, that the sync face does by blocking."""
from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from stateserver.client._errors import InvalidArgumentError


class OutstandingLimit:
    """Permits for outstanding operations: a caller past the bound waits, in arrival order.

    A write holds its permit until the node applied its batch, a read until it is answered, so
    the buffer, the batches in flight and the reads waiting together never exceed ``limit``
    operations: a slow node slows the callers instead of growing memory.
    """

    def __init__(self, limit: int, *, on_wait: Callable[[], None] = lambda: None) -> None:
        if limit < 1:
            raise InvalidArgumentError("the limit of outstanding operations must be at least 1")
        self.limit = limit
        self.in_use = 0
        self.peak = 0      # the most permits ever held at once
        self.waits = 0     # how many acquisitions had to wait
        self._on_wait = on_wait
        # (count, future, on_grant, lent): ``on_grant`` runs as the permits are granted, before the
        # future is settled (the session buffers a write that had to wait, in arrival order); a
        # lent future is the caller's own, settled by its owner once answered, not at the grant.
        self._waiters: collections.deque[tuple[int, asyncio.Future[Any], Callable[[], None] | None, bool]] = \
            collections.deque()

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def try_acquire(self, count: int = 1) -> bool:
        if self._waiters or self.in_use + count > self.limit:
            return False
        self.in_use += count
        if self.in_use > self.peak:
            self.peak = self.in_use
        return True

    async def acquire(self, count: int = 1) -> None:
        if count > self.limit:
            raise InvalidArgumentError(f"{count} operations at once exceed the limit of {self.limit}")
        if self.try_acquire(count):
            return
        future = self.enqueue(count)
        entry = self._waiters[-1]
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(count)  # granted just as the caller gave up
            else:
                self._waiters.remove(entry)
                self._grant()
            raise

    def enqueue(self, count: int, on_grant: Callable[[], None] | None = None, *,
                lent: asyncio.Future[Any] | None = None) -> asyncio.Future[Any]:
        """Wait in line for ``count`` permits without a coroutine: the future settles once they are
        granted (and ``on_grant`` ran), or with the error of ``on_grant`` or of ``fail``. With
        ``lent``, that future waits instead, and the grant leaves its result to its owner."""
        self.waits += 1
        future = lent if lent is not None else asyncio.get_running_loop().create_future()
        self._waiters.append((count, future, on_grant, lent is not None))
        self._on_wait()  # the session sends what it holds rather than wait for batches to fill
        return future

    def fail(self, error: BaseException) -> None:
        """Raise ``error`` in every waiting caller: nothing will release permits any more."""
        while self._waiters:
            _count, future, _on_grant, _lent = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)

    def release(self, count: int = 1) -> None:
        self.in_use -= count
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.limit:
            count, future, on_grant, lent = self._waiters.popleft()
            if future.done():
                continue
            self.in_use += count
            if self.in_use > self.peak:
                self.peak = self.in_use
            try:
                if on_grant is not None:
                    on_grant()
            except Exception as exc:  # refused after all (the writer failed meanwhile)
                self.in_use -= count
                future.set_exception(exc)
                continue
            if not lent:
                future.set_result(None)

"""Leases on a resource that must not close while anyone uses it, after Flink's ``ResourceGuard``.

Every user of the resource takes a lease for as long as it uses it; ``close`` refuses new leases
from then on and waits for the leases in flight to end. The guard holds no lock while a user
works, and ``close`` waits on the guard's own condition only, so a closer never holds a lock a
lease holder needs (the caller must not hold one either while it waits).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class GuardClosed(Exception):
    """The guard refuses leases: its resource is closing or closed."""


class ResourceGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._leases = 0
        self._closed = False
        self._clock = clock

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def leases(self) -> int:
        return self._leases

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold a lease for the ``with`` block; GuardClosed once closing started."""
        with self._changed:
            if self._closed:
                raise GuardClosed()
            self._leases += 1
        try:
            yield
        finally:
            with self._changed:
                self._leases -= 1
                if self._leases == 0:
                    self._changed.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new leases, then wait (up to ``timeout`` seconds) for the leases in flight.

        True once none is left; False if some were still held when the time was up.
        Closing again waits again, so a second closer also returns after the first's wait.
        """
        with self._changed:
            self._closed = True
            deadline = None if timeout is None else self._clock() + timeout
            while self._leases:
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

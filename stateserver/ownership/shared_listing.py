"""One LIST of a namespace's ownership records shared by the opens that ask at the same time.

A failover opens tens of shards on a node at once, and each open lists the namespace's records
three times (check, claim, check again). Fencing needs each of those to see every record written
before it asked (invariant 11), not a listing of its own: a caller here joins the next listing
that has not started yet, or starts one; a listing already running when it asks may predate a
record it must see, so it waits for that one to end and takes the next. Single flight per
namespace: at most one listing runs, and every caller waits for at most two.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Round(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def result(self) -> T:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class SharedListing(Generic[T]):
    """``get(namespace)``: what ``fetch(namespace)`` returns, from a call that started after this one."""

    def __init__(self, fetch: Callable[[str], T]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._running: dict[str, _Round[T]] = {}
        self._next: dict[str, _Round[T]] = {}  # not started yet: whoever asks now may join it
        self.fetches = 0  # listings made, for tests

    def get(self, namespace: str) -> T:
        with self._lock:
            joined = self._next.get(namespace)
            if joined is not None:
                leads, earlier = False, None
            elif namespace not in self._running:
                joined = self._running[namespace] = _Round()
                leads, earlier = True, None
            else:
                joined = self._next[namespace] = _Round()
                leads, earlier = True, self._running[namespace]
        if not leads:
            return joined.result()
        if earlier is not None:
            earlier.done.wait()
            with self._lock:
                del self._next[namespace]  # from now on a caller waits for the round after this one
                self._running[namespace] = joined
        try:
            joined.value = self._fetch(namespace)
            self.fetches += 1
        except BaseException as exc:
            joined.error = exc
        finally:
            with self._lock:
                del self._running[namespace]
            joined.done.set()
        return joined.result()

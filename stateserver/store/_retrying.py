"""``RetryingObjectStore``: retries StoreUnavailable with exponential backoff and full jitter.

Only ``StoreUnavailable`` is retried. NotFound, AlreadyExists, AccessDenied and invalid input are
answers, not accidents, and come back at once. The sleep function and the random source are
parameters so that tests run without waiting and see exactly which delays were chosen.
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ._errors import ObjectNotFound, StoreUnavailable
from ._interface import ObjectMeta, ObjectStore

_log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """``attempts`` counts the first try; the delay before retry n (1-based) is drawn uniformly
    from [0, min(max_delay, base_delay * 2**(n-1))] ("full jitter", so that many nodes retrying
    together spread out instead of hammering the store in step)."""

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, retry: int, unit_random: float) -> float:
        """The pause before retry number ``retry`` (1-based), given a uniform draw in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling * unit_random


class RetryingObjectStore:
    """An ObjectStore that retries the transient failures of another one."""

    def __init__(
        self,
        inner: ObjectStore,
        *,
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        unit_random: Callable[[], float] = random.random,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._sleep = sleep
        self._unit_random = unit_random

    def __repr__(self) -> str:
        return f"RetryingObjectStore({self._inner!r}, {self._policy!r})"

    @property
    def url(self) -> str:
        return self._inner.url

    def put(self, key: str, data: bytes) -> None:
        self._call(lambda: self._inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        saw_failure = False
        for attempt in range(1, self._policy.attempts + 1):
            try:
                created = self._inner.put_if_absent(key, data)
            except StoreUnavailable as exc:
                # A failed attempt may still have created the object (the answer was lost, not
                # the request), so a later "already exists" may be our own earlier write.
                saw_failure = True
                self._pause_or_raise(attempt, exc)
                continue
            if created or not saw_failure:
                return created
            return self._holds(key, data)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _holds(self, key: str, data: bytes) -> bool:
        try:
            return self._call(lambda: self._inner.get(key)) == data
        except ObjectNotFound:
            return False  # it existed when our create was refused, and it does not hold our bytes

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._call(lambda: self._inner.put_file(key, local_path))

    def get(self, key: str) -> bytes:
        return self._call(lambda: self._inner.get(key))

    def get_to_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._call(lambda: self._inner.get_to_file(key, local_path))

    def head(self, key: str) -> ObjectMeta:
        return self._call(lambda: self._inner.head(key))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        # A listing that fails halfway cannot resume where it stopped without remembering every
        # key it yielded, so the whole listing is read (and retried) before the first one is yielded.
        return iter(self._call(lambda: list(self._inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._call(lambda: self._inner.delete(key))

    def exists(self, key: str) -> bool:
        return self._call(lambda: self._inner.exists(key))

    def _call(self, operation: Callable[[], T]) -> T:
        for attempt in range(1, self._policy.attempts + 1):
            try:
                return operation()
            except StoreUnavailable as exc:
                self._pause_or_raise(attempt, exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause_or_raise(self, attempt: int, exc: StoreUnavailable) -> None:
        if attempt >= self._policy.attempts:
            raise StoreUnavailable(f"{exc} (gave up after {attempt} attempts)",
                                   key=exc.key, store=exc.store) from exc
        delay = self._policy.delay(attempt, self._unit_random())
        _log.info("retrying in %.3fs after attempt %d of %d failed: %s",
                  delay, attempt, self._policy.attempts, exc)
        self._sleep(delay)

"""RetryingObjectStore around a real (memory) store with injected faults; no mocks of obstore."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from stateserver.store import (
    ObjectMeta,
    ObjectNotFound,
    ObjectStore,
    RetryingObjectStore,
    RetryPolicy,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
    open_store,
)

T = TypeVar("T")


class FaultyStore:
    """A real store whose first ``failures`` calls raise ``error``.

    With ``lose_answers`` the failing call first reaches the store, as when a request lands but
    its response is lost on the way back.
    """

    def __init__(self, inner: ObjectStore, *, failures: int, error: type[StoreError] = StoreUnavailable,
                 lose_answers: bool = False) -> None:
        self.inner = inner
        self.failures_left = failures
        self.error = error
        self.lose_answers = lose_answers
        self.calls: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return self.inner.url

    def _call(self, name: str, key: str, operation: Callable[[], T]) -> T:
        self.calls[name] += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            if self.lose_answers:
                operation()
            raise self.error(f"injected failure of {name} {key!r}", key=key, store=self.url)
        return operation()

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._call("put_if_absent", key, lambda: self.inner.put_if_absent(key, data))

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._call("put_file", key, lambda: self.inner.put_file(key, local_path))

    def get(self, key: str) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key))

    def get_to_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._call("get_to_file", key, lambda: self.inner.get_to_file(key, local_path))

    def head(self, key: str) -> ObjectMeta:
        return self._call("head", key, lambda: self.inner.head(key))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self._call("list", prefix, lambda: iter(list(self.inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def exists(self, key: str) -> bool:
        return self._call("exists", key, lambda: self.inner.exists(key))


POLICY = RetryPolicy(attempts=4, base_delay=0.1, max_delay=0.25)


def _retrying(inner: ObjectStore, sleeps: list[float]) -> RetryingObjectStore:
    return RetryingObjectStore(inner, policy=POLICY, sleep=sleeps.append, unit_random=lambda: 0.5)


def test_transient_failures_are_retried_with_growing_jittered_delays() -> None:
    memory = open_store("memory://")
    memory.put("k", b"v")
    faulty = FaultyStore(memory, failures=3)
    sleeps: list[float] = []
    assert _retrying(faulty, sleeps).get("k") == b"v"
    assert faulty.calls["get"] == 4
    assert sleeps == [0.05, 0.1, 0.125]  # half of 0.1, 0.2, then of the 0.25 cap


def test_it_gives_up_after_the_last_attempt_and_says_so() -> None:
    faulty = FaultyStore(open_store("memory://"), failures=10)
    sleeps: list[float] = []
    with pytest.raises(StoreUnavailable) as caught:
        _retrying(faulty, sleeps).put("k", b"v")
    assert faulty.calls["put"] == 4 and len(sleeps) == 3
    assert "gave up after 4 attempts" in str(caught.value) and caught.value.key == "k"
    assert isinstance(caught.value.__cause__, StoreUnavailable)


@pytest.mark.parametrize("error", [StoreAccessDenied, StoreError])
def test_definite_refusals_are_not_retried(error: type[StoreError]) -> None:
    faulty = FaultyStore(open_store("memory://"), failures=1, error=error)
    sleeps: list[float] = []
    with pytest.raises(error):
        _retrying(faulty, sleeps).put("k", b"v")
    assert faulty.calls["put"] == 1 and sleeps == []


def test_a_missing_object_is_not_retried() -> None:
    faulty = FaultyStore(open_store("memory://"), failures=0)
    sleeps: list[float] = []
    with pytest.raises(ObjectNotFound):
        _retrying(faulty, sleeps).get("missing")
    assert faulty.calls["get"] == 1 and sleeps == []


def test_an_existing_object_is_not_retried() -> None:
    memory = open_store("memory://")
    memory.put("ckpt", b"someone else")
    faulty = FaultyStore(memory, failures=0)
    sleeps: list[float] = []
    assert _retrying(faulty, sleeps).put_if_absent("ckpt", b"mine") is False
    assert faulty.calls == Counter({"put_if_absent": 1}) and sleeps == []


def test_put_if_absent_whose_lost_first_attempt_landed_reports_created() -> None:
    memory = open_store("memory://")
    faulty = FaultyStore(memory, failures=1, lose_answers=True)
    sleeps: list[float] = []
    assert _retrying(faulty, sleeps).put_if_absent("ckpt/7/metadata", b"epoch 3, writer a") is True
    # The second attempt really did see "already exists"; only the comparison tells it was ours.
    assert faulty.calls["put_if_absent"] == 2 and faulty.calls["get"] == 1
    assert memory.get("ckpt/7/metadata") == b"epoch 3, writer a"


def test_put_if_absent_after_a_failure_still_reports_someone_elses_object() -> None:
    memory = open_store("memory://")
    memory.put("ckpt/7/metadata", b"epoch 3, writer b")  # landed while our first attempt failed
    faulty = FaultyStore(memory, failures=1)
    sleeps: list[float] = []
    assert _retrying(faulty, sleeps).put_if_absent("ckpt/7/metadata", b"epoch 3, writer a") is False
    assert memory.get("ckpt/7/metadata") == b"epoch 3, writer b"


def test_file_transfers_and_listings_are_retried(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"abc")
    memory = open_store("memory://")
    faulty = FaultyStore(memory, failures=0)
    sleeps: list[float] = []
    store = _retrying(faulty, sleeps)
    faulty.failures_left = 1
    assert store.put_file("f", source) == 3
    faulty.failures_left = 1
    assert store.get_to_file("f", tmp_path / "dst") == 3
    faulty.failures_left = 1
    assert [m.key for m in store.list("")] == ["f"]
    faulty.failures_left = 1
    assert store.head("f").size == 3 and store.exists("f")
    faulty.failures_left = 1
    store.delete("f")
    assert not memory.exists("f") and len(sleeps) == 5


def test_policy_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0)
    assert [policy.delay(n, 1.0) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(3, 0.0) == 0.0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)

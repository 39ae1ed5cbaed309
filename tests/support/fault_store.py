"""An ObjectStore wrapper that injects errors, timeouts, lost answers and slow calls, for tests only.

It reads its rules from a small JSON control file whose path a test gives it, re-reading the file
whenever it changes, so a test can switch faults on and off in a running node:

    {"seed": 7, "generation": 3, "rules": [
        {"ops": ["put_file"], "kind": "error", "probability": 1.0, "max_count": 6},
        {"ops": ["get", "head"], "kind": "slow", "probability": 0.3, "delay_ms": 150}]}

Kinds: ``error`` raises StoreUnavailable before the call reaches the store; ``timeout`` waits
``delay_ms`` first (a request that hung, then failed); ``lost_answer`` makes the call and then
raises StoreUnavailable (the write landed, its answer did not: only for writes and deletes);
``slow`` waits ``delay_ms`` and then makes the call. ``max_count`` caps a rule's injections per
generation (``probability`` 1.0 with ``max_count`` 6 is an outage that outlasts the node's
retries). Draws come from ``random.Random`` seeded with (seed, generation), so a generation's
choices are reproducible up to thread scheduling. Every injection appends ``<kind> <op>`` to
``<control file>.events``, which the test counts.

The node never knows: ``support.fault_node`` puts this around the store that ``open_store``
returns, under the node's own ``RetryingObjectStore``, as a misbehaving network would be.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from stateserver.store import ObjectMeta, ObjectStore, StoreUnavailable

T = TypeVar("T")
WRITE_OPS = frozenset({"put", "put_if_absent", "put_file", "delete"})
ALL_OPS = ("put", "put_if_absent", "put_file", "get", "get_to_file", "head", "list", "delete", "exists")


@dataclass(frozen=True, kw_only=True)
class FaultRule:
    ops: frozenset[str]
    kind: str
    probability: float
    delay_ms: int = 0
    max_count: int | None = None
    key_contains: str = ""


class FaultInjectingStore:
    def __init__(self, inner: ObjectStore, control_path: Path) -> None:
        self._inner = inner
        self._control_path = control_path
        self._events_path = Path(f"{control_path}.events")
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._generation: tuple[int, int] | None = None
        self._rules: list[FaultRule] = []
        self._counts: list[int] = []
        self._random = random.Random(0)

    @property
    def url(self) -> str:
        return self._inner.url

    def __repr__(self) -> str:
        return f"FaultInjectingStore({self._inner!r})"

    # -- the rules -----------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            stat = self._control_path.stat()
        except FileNotFoundError:
            self._rules, self._stamp = [], None
            return
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            control = json.loads(self._control_path.read_text())
        except (OSError, ValueError):
            return  # caught between write and rename: keep the old rules
        self._stamp = stamp
        generation = (int(control["seed"]), int(control["generation"]))
        if generation != self._generation:
            self._generation = generation
            self._random = random.Random(f"{generation[0]}-{generation[1]}")
            self._rules = [FaultRule(ops=frozenset(r.get("ops") or ALL_OPS), kind=str(r["kind"]),
                                     probability=float(r.get("probability", 1.0)), delay_ms=int(r.get("delay_ms", 0)),
                                     max_count=r.get("max_count"), key_contains=str(r.get("key_contains", "")))
                           for r in control["rules"]]
            self._counts = [0] * len(self._rules)

    def _choose(self, op: str, key: str) -> FaultRule | None:
        with self._lock:
            self._reload()
            for index, rule in enumerate(self._rules):
                if op not in rule.ops or rule.key_contains not in key:
                    continue
                if rule.kind == "lost_answer" and op not in WRITE_OPS:
                    continue
                if rule.max_count is not None and self._counts[index] >= rule.max_count:
                    continue
                if self._random.random() < rule.probability:
                    self._counts[index] += 1
                    with open(self._events_path, "a") as events:
                        events.write(f"{rule.kind} {op}\n")
                    return rule
        return None

    def _call(self, op: str, key: str, operation: Callable[[], T]) -> T:
        rule = self._choose(op, key)
        if rule is None:
            return operation()
        if rule.kind in ("timeout", "slow"):
            time.sleep(rule.delay_ms / 1000)
        if rule.kind in ("error", "timeout"):
            raise StoreUnavailable(f"injected {rule.kind}: {op} {key}", key=key, store=self.url)
        result = operation()
        if rule.kind == "lost_answer":
            raise StoreUnavailable(f"injected lost answer: {op} {key} was done", key=key, store=self.url)
        return result

    # -- ObjectStore ---------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self._inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._call("put_if_absent", key, lambda: self._inner.put_if_absent(key, data))

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._call("put_file", key, lambda: self._inner.put_file(key, local_path))

    def get(self, key: str) -> bytes:
        return self._call("get", key, lambda: self._inner.get(key))

    def get_to_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._call("get_to_file", key, lambda: self._inner.get_to_file(key, local_path))

    def head(self, key: str) -> ObjectMeta:
        return self._call("head", key, lambda: self._inner.head(key))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return iter(self._call("list", prefix, lambda: list(self._inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self._inner.delete(key))

    def exists(self, key: str) -> bool:
        return self._call("exists", key, lambda: self._inner.exists(key))

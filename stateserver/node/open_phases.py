"""Where a shard open spends its time, phase by phase, so a slow failover can be explained.

One ``OpenPhases`` per open: the open path wraps each step in ``with phases.timed("claim"):``;
at the end the registry hands ``phases.seconds`` to its observer (the node's
``stateserver_shard_open_phase_seconds{phase}`` histogram) and logs them with "shard opened".
The phases, in the order an open runs them:

- ``wait``: held back by an open or close of overlapping key groups;
- ``check``: the ownership check before anything is built (a LIST of the store's owner records);
- ``restore``: building the checkpoint's copy (local links and their checks, or a download);
- ``claim``: the create-only ownership record and its check;
- ``take_over``: closing the older shards this open replaces, setting their directories aside;
- ``rocksdb_open``: opening the shard's RocksDB;
- ``serve``: the writer's epoch and states recorded in the shard.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

PHASES = ("wait", "check", "restore", "claim", "take_over", "rocksdb_open", "serve")

# Told the seconds of each phase an open ran (only the phases it ran).
PhaseObserver = Callable[[dict[str, float]], None]


class OpenPhases:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = self._clock()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + self._clock() - started

    def rounded(self) -> dict[str, float]:
        """For the log line: milliseconds, to a tenth."""
        return {phase: round(seconds * 1000, 1) for phase, seconds in self.seconds.items()}

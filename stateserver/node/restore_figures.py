"""How a node's shard restores went: how many run now and at most at once, how many were built
from a retained local copy and how many downloaded, how many local copies were refused.

A failover reopens a lost node's shards on the nodes that take them over, many at once (the peak
shows whether they overlapped), and the survivors' own shards from their local copies
(``stateserver_restores_total{source="local"}``). Read at scrape time, like the shard figures.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric


class RestoreFigures:
    def __init__(self, local_copies: Callable[[], tuple[int, int]] = lambda: (0, 0)) -> None:
        """``local_copies()`` says how many restores used a local copy, and how many were refused."""
        self._lock = threading.Lock()
        self._local_copies = local_copies
        self.current = 0
        self.peak = 0
        self.downloaded = 0
        self.kept_in_place = 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one restore for the block."""
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        try:
            yield
        finally:
            with self._lock:
                self.current -= 1

    def count_download(self) -> None:
        with self._lock:
            self.downloaded += 1

    def count_kept_in_place(self) -> None:
        with self._lock:
            self.kept_in_place += 1

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("stateserver_restores_in_flight", "Shard restores running now.", value=self.current)
        yield GaugeMetricFamily("stateserver_restores_in_flight_peak",
                                "The most shard restores this node ran at once since it started.", value=self.peak)
        used, rejected = self._local_copies()
        by_source = CounterMetricFamily("stateserver_restores", "Shard restores by where their files came from: "
                                        "a retained local copy (local recovery), the snapshot store, or none: "
                                        "the open shard was still exactly the checkpoint (in_place).",
                                        labels=["source"])
        by_source.add_metric(["local"], used)
        by_source.add_metric(["download"], self.downloaded)
        by_source.add_metric(["in_place"], self.kept_in_place)
        yield by_source
        yield CounterMetricFamily("stateserver_local_copies_rejected", "Retained local copies not used because "
                                  "a file differed from the committed manifest (the restore downloaded).",
                                  value=rejected)

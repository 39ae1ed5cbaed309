"""The node's one metrics endpoint: the supervisor scrapes its workers and re-exposes their series
with a ``worker`` label, beside its own figures about the workers.

Why aggregation rather than prometheus-client's multiprocess mode: the workers' figures include
collectors that run at scrape time (per-shard RocksDB figures, ``metrics_shards.ShardCollector``),
which multiprocess mode cannot carry (it shares only counters, gauges and histograms written to
mmap files); it also needs the environment set before prometheus_client is imported and leaves
files of dead workers to clean up. Scraping costs one loopback HTTP request per worker per scrape,
and a worker that is down just leaves a gap (``stateserver_node_worker_up`` 0).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import urllib.request
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

SCRAPE_TIMEOUT_SECONDS = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    """What the supervisor knows of one worker at a scrape."""

    index: int
    metrics_port: int  # 0: not running
    serving: bool
    restarts: int


class NodeCollector(Collector):
    """Every worker's series, labelled ``worker``, and the supervisor's own."""

    def __init__(self, workers: Callable[[], Sequence[WorkerStatus]]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        workers = list(self._workers())
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, max(1, len(workers)))) as pool:
            texts = list(pool.map(_scrape, workers))
        families: dict[str, Metric] = {}
        for status, text in zip(workers, texts):
            for family in text_string_to_metric_families(text or ""):
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                                  family.unit))
                merged.samples.extend(Sample(sample.name, {**sample.labels, "worker": str(status.index)}, sample.value,
                                             sample.timestamp, sample.exemplar) for sample in family.samples)
        yield from families.values()
        up = GaugeMetricFamily("stateserver_node_worker_up", "1 if the worker answered this scrape.", labels=["worker"])
        serving = GaugeMetricFamily("stateserver_node_worker_serving", "1 if the worker's health service said "
                                    "SERVING at the supervisor's last check.", labels=["worker"])
        restarts = CounterMetricFamily("stateserver_node_worker_restarts", "Times the supervisor restarted the "
                                       "worker after it died.", labels=["worker"])
        for status, text in zip(workers, texts):
            label = [str(status.index)]
            up.add_metric(label, 1.0 if text is not None else 0.0)
            serving.add_metric(label, 1.0 if status.serving else 0.0)
            restarts.add_metric(label, float(status.restarts))
        yield from (up, serving, restarts)
        yield GaugeMetricFamily("stateserver_node_workers", "Worker processes the node runs.", value=len(workers))


def _scrape(status: WorkerStatus) -> str | None:
    if not status.metrics_port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{status.metrics_port}/metrics",
                                    timeout=SCRAPE_TIMEOUT_SECONDS) as reply:
            return str(reply.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def node_registry(workers: Callable[[], Sequence[WorkerStatus]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(NodeCollector(workers))
    return registry

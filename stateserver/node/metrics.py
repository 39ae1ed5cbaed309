"""A node's Prometheus metrics: one ``NodeMetrics`` per node, in the node's own registry.

Each ``NodeMetrics`` has its own ``CollectorRegistry``, so several nodes in one process (tests)
never share or collide on a series. How a component gets one: ``Node.__init__`` makes it as
``node.metrics`` before anything else and hands it to what it builds (``StateService(...,
metrics=self.metrics)``); a component that records figures takes a keyword argument
``metrics: NodeMetrics`` and ``Node`` passes ``self.metrics`` where it constructs it
(``open_checkpointing`` for the snapshot code). Code that runs outside a node (a CLI restore, a
unit test) passes ``NodeMetrics()``, which records into a registry nobody scrapes.

Where each figure is recorded, and what it costs:

- per RPC, by ``interceptors.RequestMetricsInterceptor``: ``stateserver_requests_total{method,code}``
  and ``stateserver_request_seconds{method}`` (``method`` is the RPC name, ``code`` the gRPC status
  name such as ``OK`` or ``NOT_FOUND``);
- per applied write batch and per read, by ``StateService``, from the lengths of the packed
  fields (no per-key work): keys and bytes written and read, and ``stateserver_batch_ops``;
- per checkpoint phase and restore, by the snapshot code: ``observe_checkpoint_sync``,
  ``observe_checkpoint_async`` and ``observe_restore``;
- per successful shard open, by the registry: ``stateserver_shard_open_phase_seconds{phase}``
  (the phases are listed in ``open_phases``);
- at scrape time, by ``metrics_shards.ShardCollector``: shards per namespace, disk bytes and
  RocksDB figures per shard. Nothing of that runs on the request path.

"Keys written" counts the operations of applied write batches and "bytes written" their key,
value and map-key bytes. "Keys read" counts keys looked up by ReadBatch and entries returned
by Iterate; "bytes read" the value bytes returned (and entry keys, for Iterate).
"""
from __future__ import annotations

import dataclasses
import threading
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

__all__ = ["MetricsEndpoint", "NodeMetrics", "start_metrics_endpoint"]

_REQUEST_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_OPS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)
_SYNC_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ASYNC_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_OPEN_PHASE_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RESTORE_SECONDS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class NodeMetrics:
    """Every metric of one node. Recording methods are cheap and thread-safe."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._requests = Counter("stateserver_requests", "RPCs handled, by RPC name and gRPC status code.",
                                 ["method", "code"], registry=registry)
        self._request_seconds = Histogram("stateserver_request_seconds", "Time to handle an RPC, by RPC name.",
                                          ["method"], buckets=_REQUEST_SECONDS, registry=registry)
        self._keys_written = Counter("stateserver_keys_written", "Operations of applied write batches.",
                                     registry=registry)
        self._bytes_written = Counter("stateserver_bytes_written",
                                      "Key, value and map-key bytes of applied write batches.", registry=registry)
        self._keys_read = Counter("stateserver_keys_read", "Keys looked up by reads and entries returned by "
                                  "iteration.", registry=registry)
        self._bytes_read = Counter("stateserver_bytes_read", "Value bytes (and entry keys, for iteration) "
                                   "returned by reads.", registry=registry)
        self._batch_ops = Histogram("stateserver_batch_ops", "Operations per applied write batch.",
                                    buckets=_BATCH_OPS, registry=registry)
        self._checkpoint_sync_seconds = Histogram(
            "stateserver_checkpoint_sync_seconds", "Sync phase of a shard snapshot (local RocksDB checkpoint).",
            buckets=_SYNC_SECONDS, registry=registry)
        self._checkpoint_async_seconds = Histogram(
            "stateserver_checkpoint_async_seconds", "Async phase of a shard snapshot (upload to the store).",
            buckets=_ASYNC_SECONDS, registry=registry)
        self._checkpoint_uploaded_bytes = Counter(
            "stateserver_checkpoint_uploaded_bytes", "Bytes uploaded by checkpoints.", registry=registry)
        self._checkpoint_reused_bytes = Counter(
            "stateserver_checkpoint_reused_bytes", "Bytes checkpoints referenced from earlier uploads "
            "instead of uploading them.", registry=registry)
        self._restore_seconds = Histogram("stateserver_restore_seconds", "Time to restore a shard from a "
                                          "snapshot.", buckets=_RESTORE_SECONDS, registry=registry)
        self._restore_bytes = Counter("stateserver_restore_bytes", "Bytes downloaded by restores.",
                                      registry=registry)
        self._open_phase_seconds = Histogram(
            "stateserver_shard_open_phase_seconds", "Time a successful shard open spent in each phase "
            "(stateserver.node.open_phases).", ["phase"], buckets=_OPEN_PHASE_SECONDS, registry=registry)
        prometheus_client.ProcessCollector(registry=registry)
        prometheus_client.PlatformCollector(registry=registry)
        # Collections per generation: a full one is a latency spike on whichever request runs (gc_tuning).
        prometheus_client.GCCollector(registry=registry)
        # Children by label values: .labels() takes a lock and builds a key on every call.
        self._request_children: dict[tuple[str, grpc.StatusCode], tuple[Counter, Histogram]] = {}

    # -- the request path --------------------------------------------------------------------

    def record_request(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        children = self._request_children.get((method, code))
        if children is None:
            children = (self._requests.labels(method=method, code=code.name),
                        self._request_seconds.labels(method=method))
            self._request_children[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def record_write_batch(self, ops: int, payload_bytes: int) -> None:
        """An applied write batch of ``ops`` operations carrying ``payload_bytes`` of keys and values."""
        self._keys_written.inc(ops)
        self._bytes_written.inc(payload_bytes)
        self._batch_ops.observe(ops)

    def record_read(self, keys: int, payload_bytes: int) -> None:
        self._keys_read.inc(keys)
        self._bytes_read.inc(payload_bytes)

    # -- snapshots and restores (called by the snapshot code, once per shard) ------------------

    def observe_checkpoint_sync(self, seconds: float) -> None:
        self._checkpoint_sync_seconds.observe(seconds)

    def observe_checkpoint_async(self, seconds: float, uploaded_bytes: int, reused_bytes: int) -> None:
        self._checkpoint_async_seconds.observe(seconds)
        self._checkpoint_uploaded_bytes.inc(uploaded_bytes)
        self._checkpoint_reused_bytes.inc(reused_bytes)

    def observe_restore(self, seconds: float, restored_bytes: int) -> None:
        self._restore_seconds.observe(seconds)
        self._restore_bytes.inc(restored_bytes)

    def observe_open_phases(self, seconds: dict[str, float]) -> None:
        """One successful shard open: the seconds of each phase it ran."""
        for phase, spent in seconds.items():
            self._open_phase_seconds.labels(phase=phase).observe(spent)

    # -- scrape time -----------------------------------------------------------------------------

    def add_collector(self, collector: Collector) -> None:
        """Have ``collector`` run at every scrape (figures read from elsewhere, such as RocksDB)."""
        self.registry.register(collector)

    def exposition(self) -> str:
        """The text a scrape returns, for tests and debugging."""
        return prometheus_client.generate_latest(self.registry).decode()


@dataclasses.dataclass
class MetricsEndpoint:
    """The HTTP server of ``/metrics``; ``close()`` stops it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_endpoint(metrics: NodeMetrics, host: str, port: int) -> MetricsEndpoint:
    """Serve ``metrics`` on http://host:port/metrics (port 0: any free port); raises OSError."""
    server, thread = prometheus_client.start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsEndpoint(host=host, port=int(server.server_port), _server=server, _thread=thread)

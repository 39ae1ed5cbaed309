"""A stateserver node: the gRPC server, its services, and its lifecycle.

Lifecycle. ``start()`` serves; ``stop()`` drains, in this order:

1. the health service says NOT_SERVING (probes and load balancers stop sending work);
2. ``grpc.Server.stop(grace=drain_seconds)``: gRPC refuses new calls at once (the listener
   closes, clients get UNAVAILABLE) and lets calls in flight finish within the grace period,
   then cancels those still running;
3. cancelling a call does not stop the thread running its handler, so the node waits (a few
   seconds more at most) until every handler returned: a write being applied finishes first;
4. every shard is flushed and closed (without a write-ahead log, memtables are the only copy of
   recent writes), the checkpointing executors stop, the metrics endpoint closes.

A node holds an exclusive lock on ``<data_dir>/node.lock`` while it runs, so a second node on
the same data directory fails at start instead of at its first shard.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import logging
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from typing import IO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from stateserver.node.checkpoint_service import CheckpointService
from stateserver.node.checkpointing import Checkpointing
from stateserver.node.cluster import Resolver, dns_resolver
from stateserver.node.interceptors import InFlightRequests, RequestMetricsInterceptor
from stateserver.protocol.limits import Limits
from stateserver.node import gc_tuning
from stateserver.node.membership import Membership
from stateserver.node.metrics import MetricsEndpoint, NodeMetrics, start_metrics_endpoint
from stateserver.node.metrics_shards import ShardCollector
from stateserver.node.peers import ask_advertised_address
from stateserver.store import RetryingObjectStore, StoreError, open_store
from stateserver.node.namespace_records import NamespaceRecords, write_back
from stateserver.node.registry import ShardRegistry
from stateserver.node.shelved_shards import ShardShelf
from stateserver.node.peer_fencing import PeerFencing
from stateserver.shard.rocks import RocksResources, RocksTuning
from stateserver.node.state_service import StateService
from stateserver.config import Settings
from stateserver.protocol.v1 import checkpoint_pb2_grpc, state_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = "stateserver.v1.StateService"
LOCK_FILE_NAME = "node.lock"
# After gRPC's grace period, how long cancelled calls' handlers may take to return.
HANDLER_EXIT_SECONDS = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 7700
    data_dir: pathlib.Path
    node_id: str = ""
    max_message_bytes: int = 64 << 20
    worker_threads: int = 16
    drain_seconds: float = 10.0
    limits: Limits = Limits()
    tuning: RocksTuning = RocksTuning()
    # Empty: file://<data_dir>/snapshots, the embedded default.
    snapshot_url: str = ""
    snapshot_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    upload_threads: int = 8
    # Committed checkpoints of a namespace kept when a commit runs retention.
    retained_checkpoints: int = 3
    # How often a namespace's retention also sweeps orphans (lists the namespace).
    orphan_sweep_interval_s: float = 3600.0
    # The cluster's nodes ("host:port" or "dns:NAME:PORT"); empty for a single node.
    nodes: tuple[str, ...] = ()
    # Or a file of them, read again on SIGHUP and when it changes (not both).
    nodes_file: pathlib.Path | None = None
    # How often dns: entries are resolved again and peers asked where they are reached; 0: never.
    membership_refresh_s: float = 10.0
    # Where clients dial this node, if not node_id (empty: node_id).
    advertised_address: str = ""
    # Port 0: no metrics endpoint.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    # A worker of a node of several (stateserver.node): each node-list entry stands for this many
    # workers, and the health of the node as a whole (service "") is set by the supervisor.
    workers_per_node: int = 1
    supervised: bool = False
    # Peers' advertised addresses known without asking them (a worker's sibling workers).
    known_advertised: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # A worker's node's other workers: cluster name -> where to dial it here (``peer_fencing``).
    siblings: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def config_from_settings(settings: Settings) -> NodeConfig:
    """The node's configuration from validated settings: the one place that maps one to the other."""
    if settings.data_dir is None:
        raise ValueError("settings without a data_dir cannot run a node; load them with load_settings()")
    return NodeConfig(
        host=settings.host, port=settings.port, data_dir=settings.data_dir, node_id=settings.node_id,
        max_message_bytes=settings.max_message_bytes, worker_threads=settings.worker_threads,
        drain_seconds=settings.drain_seconds, limits=settings.limits(),
        tuning=RocksTuning(block_cache_bytes=settings.block_cache_bytes,
                           write_buffer_bytes=settings.write_buffer_bytes),
        snapshot_url=settings.snapshot_url, snapshot_options=dict(settings.snapshot_options),
        upload_threads=settings.upload_threads, retained_checkpoints=settings.retained_checkpoints,
        orphan_sweep_interval_s=settings.orphan_sweep_interval_s, nodes=settings.nodes,
        nodes_file=settings.nodes_file, membership_refresh_s=settings.membership_refresh_s,
        advertised_address=settings.advertised_address,
        metrics_host=settings.metrics_host, metrics_port=settings.metrics_port,
    )


class NodeStartError(Exception):
    """The node cannot start: a port is taken, the data directory is in use, the snapshot store or
    the node list is unusable. The message says which, for an operator."""


def version() -> str:
    try:
        return metadata.version("stateserver")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def open_checkpointing(config: NodeConfig, resources: RocksResources, metrics: NodeMetrics) -> Checkpointing:
    url = config.snapshot_url or (config.data_dir / "snapshots").resolve().as_uri()
    try:
        store = RetryingObjectStore(open_store(url, options=dict(config.snapshot_options) or None))
    except StoreError as exc:
        raise NodeStartError(f"cannot open the snapshot store: {exc}") from exc
    return Checkpointing(store, work_dir=config.data_dir / "checkpoints", resources=resources,
                         upload_threads=config.upload_threads, retained_checkpoints=config.retained_checkpoints,
                         orphan_sweep_interval_s=config.orphan_sweep_interval_s, observer=metrics)


class Node:
    """One node. ``metrics`` is the NodeMetrics its components record into (see stateserver.node.metrics)."""

    def __init__(self, config: NodeConfig, *, resolver: Resolver = dns_resolver) -> None:
        self.config = config
        self.metrics = NodeMetrics()
        self.node_id = config.node_id or config.address
        self._lock_file = lock_data_dir(config.data_dir)
        try:
            self.membership = _membership(config, self.node_id, resolver)
            resources = RocksResources(config.tuning)
            # A worker's node directory holds the shards its workers take (``ShardShelf``).
            shelf = ShardShelf(config.data_dir.parent) if config.supervised else None
            self.registry = ShardRegistry(config.data_dir, resources, config.limits, shelf=shelf)
            self.checkpointing = open_checkpointing(config, resources, self.metrics)
            self.registry.on_restored = self.checkpointing.restored
            self.registry.on_discarded = self.checkpointing.discarded
            self.registry.on_open_phases = self.metrics.observe_open_phases
            self.registry.namespace_records = NamespaceRecords(self.checkpointing.store)
            self.metrics.add_collector(self.checkpointing.restore_figures)
            self.metrics.add_collector(ShardCollector(self.registry.open_shards))
            self.health = health.HealthServicer()
            self._in_flight = InFlightRequests()
            self.peer_fencing = PeerFencing(self.node_id, config.siblings, lambda: self.membership.nodes)
            self.server = grpc.server(
                concurrent.futures.ThreadPoolExecutor(max_workers=config.worker_threads, thread_name_prefix="rpc"),
                options=[
                    ("grpc.max_receive_message_length", config.max_message_bytes),
                    ("grpc.max_send_message_length", config.max_message_bytes),
                    ("grpc.so_reuseport", 0),
                ],
                interceptors=[RequestMetricsInterceptor(self.metrics), self._in_flight],
            )
            state_pb2_grpc.add_StateServiceServicer_to_server(
                StateService(self.registry, node_id=self.node_id, version=version(),
                             checkpointing=self.checkpointing, cluster=self.membership,
                             metrics=self.metrics, max_message_bytes=config.max_message_bytes,
                             peers=self.peer_fencing),
                self.server,
            )
            checkpoint_pb2_grpc.add_CheckpointServiceServicer_to_server(
                CheckpointService(self.registry, self.checkpointing, node_id=self.node_id), self.server
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            if config.supervised:  # until the supervisor says every worker serves
                self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            self.port = _listen(self.server, config.address)
        except BaseException:
            self._lock_file.close()
            raise
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._stop_lock = threading.Lock()
        self._stopping = threading.Event()  # set once by stop(); wakes loops that wait between attempts
        self._clean = True

    @property
    def address(self) -> str:
        return f"[{self.config.host}]:{self.port}" if ":" in self.config.host else f"{self.config.host}:{self.port}"

    @property
    def requests_in_flight(self) -> int:
        """Handlers running now (after a drain: those that outlived it)."""
        return self._in_flight.running

    def start(self) -> None:
        if self.config.metrics_port:
            try:
                self.metrics_endpoint = start_metrics_endpoint(self.metrics, self.config.metrics_host,
                                                               self.config.metrics_port)
            except OSError as exc:
                raise NodeStartError(f"cannot serve metrics on {self.config.metrics_host}:"
                                     f"{self.config.metrics_port}: {exc.strerror or exc}") from exc
        self.server.start()
        self.membership.start()
        threading.Thread(target=self._write_back_namespaces, name="namespace-write-back", daemon=True).start()
        for service in (SERVICE_NAME,) if self.config.supervised else ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        metrics = self.metrics_endpoint
        log.info("node serving", extra={
            "address": self.address, "node_id": self.node_id, "data_dir": str(self.config.data_dir),
            "metrics": f"http://{metrics.host}:{metrics.port}/metrics" if metrics else None, "version": version()})

    def _write_back_namespaces(self) -> None:
        """Namespaces created before the store held their definitions get recorded there, so that a node
        on an empty data directory learns them too; retried with backoff while the store is unreachable."""
        records = self.registry.namespace_records
        if records is None:
            return
        delay = 1.0
        while not self._stopping.is_set():
            pending = write_back(records, self.registry.known_namespaces())
            if not pending:
                return
            log.warning("cannot record namespaces in the snapshot store yet; retrying",
                        extra={"namespaces": pending, "retry_seconds": delay})
            self._stopping.wait(delay)
            delay = min(delay * 2, 60.0)

    def stop(self) -> bool:
        """Drain and close (see the module docstring); True if every shard closed cleanly."""
        with self._stop_lock:
            if self._stopping.is_set():
                return self._clean
            self._stopping.set()
            started = time.monotonic()
            log.info("draining", extra={"drain_seconds": self.config.drain_seconds,
                                        "requests_in_flight": self._in_flight.running,
                                        "open_shards": len(self.registry.open_shards())})
            self.health.enter_graceful_shutdown()
            self.membership.stop()
            self.server.stop(grace=self.config.drain_seconds).wait()
            still_running = self._in_flight.wait_idle(HANDLER_EXIT_SECONDS)
            if still_running:
                log.warning("requests still running after the drain deadline; closing shards anyway",
                            extra={"requests_in_flight": still_running})
            failed = self.registry.close_all()
            self.peer_fencing.close()
            try:
                self.checkpointing.close()
            except Exception:
                log.exception("checkpointing did not close cleanly")
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.close()
            self._lock_file.close()
            self._clean = failed == 0
            log.info("node stopped", extra={"seconds": round(time.monotonic() - started, 3),
                                            "shards_failed_to_close": failed})
            return self._clean

    def serve_until_signalled(self) -> bool:
        """Run until SIGTERM or SIGINT, then drain; True if every shard closed cleanly. SIGHUP
        reloads the node list (the nodes file, dns: names)."""
        received: list[int] = []
        wake = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signum)  # a second signal while draining changes nothing
            wake.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.membership.request_reload())
        self.start()
        gc_tuning.freeze_startup_objects()  # a process of its own from here on: tune its collector
        wake.wait()
        log.info("signal received", extra={"signal": signal.Signals(received[0]).name})
        return self.stop()


def _membership(config: NodeConfig, node_id: str, resolver: Resolver) -> Membership:
    # Whether node_id is among them is checked for static lists at load (settings); a dns: list
    # may not hold this node yet (a headless service lists ready pods only), nor a nodes file
    # (this node may be started before the file names it), so it is not checked here.
    membership = Membership(node_id, nodes=config.nodes, nodes_file=config.nodes_file,
                            advertised_address=config.advertised_address,
                            refresh_seconds=config.membership_refresh_s, resolver=resolver,
                            ask_advertised=ask_advertised_address, workers_per_node=config.workers_per_node,
                            known_advertised=config.known_advertised)
    try:
        membership.load()
    except (OSError, ValueError) as exc:
        source = str(config.nodes_file) if config.nodes_file else ", ".join(config.nodes)
        raise NodeStartError(f"cannot resolve the node list {source}: {exc}") from exc
    return membership


def _listen(server: grpc.Server, address: str) -> int:
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's way of saying the bind failed
        raise NodeStartError(f"cannot listen on {address}: the address is in use or not local") from exc
    if port == 0:
        raise NodeStartError(f"cannot listen on {address}")
    return int(port)


def lock_data_dir(data_dir: pathlib.Path) -> IO[str]:
    """Hold ``<data_dir>/node.lock`` until the returned file is closed (or the process exits)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    file = open(data_dir / LOCK_FILE_NAME, "a+", encoding="utf-8")
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        raise NodeStartError(f"data directory {data_dir} is in use by another node (pid {holder})") from None
    file.truncate(0)
    file.write(f"{os.getpid()}\n")
    file.flush()
    return file


def exit_code_after_serving(node: Node, clean: bool, failed: int) -> int:
    """The process's exit code once ``node`` has drained: 0 if clean, else ``failed``. Handler
    threads that outlived the drain would hold up the interpreter's exit (it joins the executor's
    threads); the shards are closed by then, so the process leaves at once instead."""
    code = 0 if clean else failed
    if node.requests_in_flight:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

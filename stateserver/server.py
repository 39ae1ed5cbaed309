"""A stateserver node: the gRPC server, its services, and its lifecycle."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import pathlib
import signal
import threading
from collections.abc import Mapping
from importlib import metadata

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from stateserver.limits import Limits
from stateserver.registry import ShardRegistry
from stateserver.rocks import RocksResources, RocksTuning
from stateserver.checkpoint_service import CheckpointService
from stateserver.checkpointing import Checkpointing
from stateserver.cluster import ClusterView, resolve_nodes
from stateserver.objectstore import RetryingObjectStore, open_store
from stateserver.service import StateService
from stateserver.v1 import checkpoint_pb2_grpc, state_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = "stateserver.v1.StateService"


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
    # The cluster's nodes ("host:port" or "dns:NAME:PORT"); empty for a single node.
    nodes: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def version() -> str:
    try:
        return metadata.version("stateserver")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def open_checkpointing(config: NodeConfig, resources: RocksResources) -> Checkpointing:
    url = config.snapshot_url or (config.data_dir / "snapshots").resolve().as_uri()
    store = RetryingObjectStore(open_store(url, options=dict(config.snapshot_options) or None))
    return Checkpointing(store, work_dir=config.data_dir / "checkpoints", resources=resources,
                         upload_threads=config.upload_threads)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        resources = RocksResources(config.tuning)
        self.registry = ShardRegistry(config.data_dir, resources, config.limits)
        self.checkpointing = open_checkpointing(config, resources)
        self.registry.on_restored = self.checkpointing.restored
        self.health = health.HealthServicer()
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=config.worker_threads, thread_name_prefix="rpc"),
            options=options,
        )
        node_id = config.node_id or config.address
        cluster = ClusterView(node_id, resolve_nodes(config.nodes))
        state_pb2_grpc.add_StateServiceServicer_to_server(
            StateService(self.registry, node_id=node_id, version=version(), checkpointing=self.checkpointing,
                         cluster=cluster),
            self.server,
        )
        checkpoint_pb2_grpc.add_CheckpointServiceServicer_to_server(
            CheckpointService(self.registry, self.checkpointing), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(config.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.address}")
        self._stopped = threading.Event()

    def start(self) -> None:
        self.server.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("node serving", extra={"address": f"{self.config.host}:{self.port}", "data_dir": str(self.config.data_dir)})

    def stop(self) -> None:
        """Drain: refuse new calls, let in-flight ones finish within the deadline, close shards."""
        if self._stopped.is_set():
            return
        self.health.enter_graceful_shutdown()
        self.server.stop(grace=self.config.drain_seconds).wait()
        self.registry.close_all()
        self.checkpointing.close()
        self._stopped.set()
        log.info("node stopped", extra={"address": f"{self.config.host}:{self.port}"})

    def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then drain and return."""
        wake = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: wake.set())
        self.start()
        wake.wait()
        log.info("signal received; draining", extra={"drain_seconds": self.config.drain_seconds})
        self.stop()

"""A node records in the snapshot store the namespaces its data directory knows (the write-back at
start, ``node.namespace_records.write_back``), also when the store cannot be used yet: the node
starts and serves meanwhile, the write-back tries again, and once the store can be used the
definition lands there, where a node on an empty data directory learns it.

Real parts: node processes, SeaweedFS S3. The node reaches SeaweedFS only through a TCP gate the
test opens (``support.tcp_gate``): closed, every connection is refused, as to a store that is down.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from stateserver.client import StateClient
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from stateserver.node.namespace_records import NamespaceRecords
from stateserver.node.server import Node, NodeConfig
from stateserver.store import ObjectStore, StoreAccessDenied, open_store, paths
from support.waiting import wait_until
from support.node import NodeProcess, free_loopback_port, run_node
from support.seaweedfs import SeaweedS3
from support.tcp_gate import tcp_gate

NAMESPACE = "written-back"
MAX_KEY_GROUPS = 96
RETRY_EVENT = "cannot record namespaces in the snapshot store yet; retrying"

pytestmark = pytest.mark.timeout(240)


def s3_args(url: str, endpoint: str, seaweed: SeaweedS3) -> list[str]:
    options = {**seaweed.options, "endpoint": endpoint}
    return ["--snapshot-url", url, *(arg for key, value in options.items()
                                    for arg in ("--snapshot-option", f"{key}={value}"))]


def make_data_dir_that_knows_the_namespace(data_dir: Path, store_dir: Path, workers: int | None = None) -> None:
    """A data directory whose namespace the S3 store has never heard of (it was created on another store)."""
    with run_node(data_dir, extra_args=["--snapshot-url", store_dir.as_uri()], workers=workers) as node:
        with StateClient(node.address, timeout=20) as client:
            client.create_namespace(NAMESPACE, max_key_groups=MAX_KEY_GROUPS)


def looked_up(channel: grpc.Channel) -> int:
    stub = state_pb2_grpc.StateServiceStub(channel)
    return int(stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=NAMESPACE), timeout=20).max_key_groups)


def log_events(node: NodeProcess, event: str) -> list[dict[str, object]]:
    found = []
    for line in node.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            fields = json.loads(line)
            if fields.get("event") == event:
                found.append(fields)
    return found


def retried_with_backoff(node: NodeProcess) -> bool:
    """Some worker logged a retry after a longer pause than its first (each worker writes back)."""
    delays: dict[object, list[float]] = {}
    for event in log_events(node, RETRY_EVENT):
        delays.setdefault(event.get("worker"), []).append(float(event["retry_seconds"]))  # type: ignore[arg-type]
    return any(0 < d[0] < max(d) for d in delays.values())


def assert_a_fresh_node_learns_the_namespace(tmp_path: Path, url: str, seaweed: SeaweedS3) -> None:
    with run_node(tmp_path / "empty", extra_args=s3_args(url, seaweed.endpoint, seaweed)) as fresh:
        assert looked_up(fresh.channel()) == MAX_KEY_GROUPS


def test_a_node_whose_store_is_down_at_start_serves_and_records_its_namespaces_once_it_is_back(
        tmp_path: Path, seaweed: SeaweedS3) -> None:
    url = seaweed.fresh_url("write-back-down")
    store = open_store(url, options=seaweed.options)
    make_data_dir_that_knows_the_namespace(tmp_path / "data", tmp_path / "other-store")
    s3_port = int(seaweed.endpoint.rsplit(":", 1)[1])

    with tcp_gate("127.0.0.1", s3_port) as gate:
        with run_node(tmp_path / "data", extra_args=s3_args(url, gate.endpoint, seaweed)) as node:
            # It started (run_node waited for SERVING) and serves what it knows without the store.
            for index in range(node.workers):
                assert looked_up(node.worker_channel(index)) == MAX_KEY_GROUPS
            # It tries again, backing off, rather than giving up or trying in a hot loop.
            wait_until(lambda: retried_with_backoff(node), 60, "the write-back to retry, backing off")
            assert gate.accepted == 0 and not store.exists(paths.namespace_definition(NAMESPACE))

            gate.open()  # the store is back
            wait_until(lambda: store.exists(paths.namespace_definition(NAMESPACE)), 90,
                       "the namespace to be recorded in the store")
            assert node.is_serving()
            assert not [line for line in node.log_path.read_text().splitlines() if "Traceback" in line]
    assert json.loads(store.get(paths.namespace_definition(NAMESPACE))) == {"max_key_groups": MAX_KEY_GROUPS}
    assert_a_fresh_node_learns_the_namespace(tmp_path, url, seaweed)



class RefusingStore:
    """The node's real store, except that creates are refused (access denied) while ``refusing``:
    a store that answers, but not yet as it should (credentials or a policy not in place yet)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.refusing = True
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if self.refusing:
            self.refused += 1
            raise StoreAccessDenied(f"injected: access denied creating {key!r}", key=key, store=self.inner.url)
        return self.inner.put_if_absent(key, data)


def test_a_store_that_refuses_the_write_back_gets_the_namespaces_once_it_accepts(tmp_path: Path) -> None:
    """A refusal is not retriable by itself (the store's retries give up on it at once), yet the
    write-back must not give up for ever: nothing else records these namespaces, and a node on an
    empty data directory would answer NOT_FOUND for them.

    Fails on the code before the change: the write-back caught only an unreachable store; the
    refusal ended its thread with a traceback, and the namespace was never recorded.
    """
    # One process's layout, as the in-process node below reads it.
    make_data_dir_that_knows_the_namespace(tmp_path / "data", tmp_path / "other-store", workers=1)
    store_url = (tmp_path / "store").as_uri()
    node = Node(NodeConfig(host="127.0.0.1", port=free_loopback_port(), data_dir=tmp_path / "data",
                           snapshot_url=store_url, drain_seconds=1.0))
    refusing = RefusingStore(node.checkpointing.store)
    node.registry.namespace_records = NamespaceRecords(refusing)
    node.start()
    try:
        wait_until(lambda: refusing.refused >= 2, 60, "the write-back to try again after a refusal")
        with grpc.insecure_channel(node.address) as channel:
            assert looked_up(channel) == MAX_KEY_GROUPS
        refusing.refusing = False
        store = open_store(store_url)
        wait_until(lambda: store.exists(paths.namespace_definition(NAMESPACE)), 60,
                   "the namespace to be recorded in the store")
    finally:
        node.stop()
    assert json.loads(store.get(paths.namespace_definition(NAMESPACE))) == {"max_key_groups": MAX_KEY_GROUPS}


def test_stop_ends_a_write_back_that_is_waiting_to_retry(tmp_path: Path) -> None:
    """A stopped node neither keeps its write-back thread nor touches the store again.

    Fails on the code before the change: the thread slept out its backoff (seconds, up to a minute)
    after ``stop`` returned, so an embedding process kept a thread of a node it had stopped.
    """
    make_data_dir_that_knows_the_namespace(tmp_path / "data", tmp_path / "other-store", workers=1)
    node = Node(NodeConfig(host="127.0.0.1", port=free_loopback_port(), data_dir=tmp_path / "data",
                           snapshot_url=(tmp_path / "store").as_uri(), drain_seconds=1.0))
    refusing = RefusingStore(node.checkpointing.store)
    node.registry.namespace_records = NamespaceRecords(refusing)
    node.start()
    try:
        wait_until(lambda: refusing.refused >= 3, 60, "the write-back to back off to a wait of seconds")
    finally:
        node.stop()
    attempts = refusing.refused
    wait_until(lambda: not any(t.name == "namespace-write-back" for t in threading.enumerate()), 1.0,
               "the write-back thread to end with the node")
    assert refusing.refused == attempts, "no attempt after stop"

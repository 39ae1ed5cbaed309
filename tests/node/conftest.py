"""Fixtures for tests that talk to a real node process over raw gRPC.

    node         session: one node process on a free loopback port, shared by the folder's tests
    stub         a raw StateService stub to that node (with several workers: to the worker a
                 request's shard belongs on, support/routing_stub.py)
    namespace    a fresh namespace (128 key groups) for the test, so tests do not see each other
                 (created on every worker)
    fresh_node   a factory for nodes of the test's own (restart, other limits); stopped at teardown
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import NodeProcess, run_node, unique_namespace, start_node
from support.routing_stub import RoutingStub

MAX_KEY_GROUPS = 128


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with run_node(tmp_path_factory.mktemp("node") / "data") as running:
        yield running


@pytest.fixture
def stub(node: NodeProcess) -> state_pb2_grpc.StateServiceStub:
    return RoutingStub(node)  # type: ignore[return-value]  # the same methods, routed


@pytest.fixture
def namespace(request: pytest.FixtureRequest, stub: state_pb2_grpc.StateServiceStub) -> str:
    name = unique_namespace(request.node.name)
    stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=name, max_key_groups=MAX_KEY_GROUPS), timeout=10)
    return name


@pytest.fixture
def fresh_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []

    def start(data_dir: Path | None = None, **options: object) -> NodeProcess:
        running = start_node(data_dir or tmp_path / "data", **options)  # type: ignore[arg-type]
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


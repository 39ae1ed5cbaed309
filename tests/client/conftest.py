"""Fixtures for tests of the client library against a real node process.

    node         session: one node process on a free loopback port, shared by the folder's tests
    namespace    a fresh namespace (128 key groups) for the test, so tests do not see each other
    client       a StateClient connected to the node, closed after the test
    writer       the namespace's writer for all 128 key groups at epoch 1
    node_stub    a raw StateService stub: what the node stores, without the client's buffer
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from stateserver.client import StateClient, Writer
from support.routing_stub import RoutingStub
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import NodeProcess, run_node, unique_namespace

MAX_KEY_GROUPS = 128


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with run_node(tmp_path_factory.mktemp("client-node") / "data") as running:
        yield running


@pytest.fixture
def client(node: NodeProcess) -> Iterator[StateClient]:
    with StateClient(node.address, timeout=20) as state_client:
        yield state_client


@pytest.fixture
def namespace(request: pytest.FixtureRequest, client: StateClient) -> str:
    name = unique_namespace(request.node.name)
    assert client.create_namespace(name, max_key_groups=MAX_KEY_GROUPS) == MAX_KEY_GROUPS
    return name


@pytest.fixture
def writer(client: StateClient, namespace: str) -> Writer:
    return client.open_writer(namespace, key_groups=f"0-{MAX_KEY_GROUPS - 1}", epoch=1)


@pytest.fixture
def node_stub(node: NodeProcess) -> state_pb2_grpc.StateServiceStub:
    return RoutingStub(node)  # type: ignore[return-value]  # the worker each shard belongs on



@pytest.fixture
def node_address(node: NodeProcess) -> str:
    return node.address

"""Fixtures for the checkpoint hooks against real node processes.

    node         module: one node process on a free loopback port
    client       a StateClient connected to that node, closed after the test
    namespace    a fresh namespace (128 key groups) for the test
    operator     the operator loop of examples/operator_loop.py, imported from its file
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from stateserver.client import StateClient
from support.node import NodeProcess, run_node, unique_namespace

MAX_KEY_GROUPS = 128
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with run_node(tmp_path_factory.mktemp("checkpointing-node") / "data") as running:
        yield running


@pytest.fixture
def client(node: NodeProcess) -> Iterator[StateClient]:
    with StateClient(node.address, timeout=20) as state_client:
        yield state_client


@pytest.fixture
def namespace(request: pytest.FixtureRequest, client: StateClient) -> str:
    name = unique_namespace(request.node.name)
    client.create_namespace(name, max_key_groups=MAX_KEY_GROUPS)
    return name


@pytest.fixture(scope="session")
def operator() -> ModuleType:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("operator_loop")

"""Fixtures for the Bytewax adapter against a real node process.

    node         module: one node process on a free loopback port
    wordcount    examples/bytewax_wordcount.py, imported from its file
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from support.node import NodeProcess, run_node

pytest.importorskip("bytewax", reason="the Bytewax adapter's tests need bytewax==0.21.1 (the test extra)")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with run_node(tmp_path_factory.mktemp("bytewax-node") / "data") as running:
        yield running


@pytest.fixture(scope="session")
def wordcount() -> ModuleType:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("bytewax_wordcount")

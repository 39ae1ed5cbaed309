from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from support.cluster import Cluster, run_cluster
from support.node import free_loopback_port
from support.seaweedfs import SeaweedS3


@pytest.fixture
def cluster(tmp_path: Path, seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Three nodes that know each other, snapshotting into a fresh prefix of a real S3 server."""
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)  # the node processes inherit the credentials
    with run_cluster(tmp_path / "nodes", seaweed.fresh_url()) as nodes:
        yield nodes


@pytest.fixture
def file_listed_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes whose node list is a file (``--nodes-file``), on one file:// store. The first
    node reloads the file only on SIGHUP (``--membership-refresh-s 0``); the others also when it
    changes."""
    with run_cluster(tmp_path / "nodes", (tmp_path / "store").as_uri(), nodes_file=True,
                     node_args=[["--membership-refresh-s", "0"]]) as nodes:
        yield nodes


@pytest.fixture
def metered_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, int]]]:
    """Three nodes on one file:// store, each with a metrics endpoint; their ports by address."""
    ports = [free_loopback_port() for _ in range(3)]
    with run_cluster(tmp_path / "nodes", (tmp_path / "store").as_uri(),
                     node_args=[["--metrics-port", str(port)] for port in ports]) as cluster:
        yield cluster, dict(zip(cluster.addresses, ports))


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """``examples/recovering_job.py``, imported from its file: the job loop the cluster tests run."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("recovering_job")

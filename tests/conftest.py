"""Fixtures shared by every test package.

Object storage:
    seaweed        session: a real S3 server (SeaweedFS on loopback) with a session bucket;
                   .url, .endpoint, .access_key, .secret_key, .options, .env, .fresh_url(), .create_bucket()
    s3_store_url   a fresh, empty prefix in that bucket; open it with options=seaweed.options
    store_url      parametrized over "file" (a tmp_path directory) and "s3" (a fresh prefix);
                   for "s3" the AWS_* variables point at SeaweedFS, so open_store(store_url) works
                   without options, as it does for a node started with those variables
"""
from __future__ import annotations

import os

# Before anything imports grpc: grpcio >= 1.81 restarts its epoll poller in a forked child, and a
# child that closes its descriptors before exec (subprocess with preexec_fn, as the node launcher
# uses) can then abort with "epoll_wait: Bad file descriptor" (grpc/grpc#43055): a node that never
# started, now and then. Without fork support the child runs no gRPC code before exec.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import node as _node  # noqa: F401  reads and removes STATESERVER_TEST_WORKERS before any node starts
from support.seaweedfs import SeaweedS3, run_seaweedfs

# Variables that would steer obstore elsewhere if a developer's shell has them set.
_AWS_VARIABLES_TO_CLEAR = (
    "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP", "AWS_BUCKET", "AWS_BUCKET_NAME",
)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_store_url(seaweed: SeaweedS3) -> str:
    return seaweed.fresh_url()


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    server: SeaweedS3 = request.getfixturevalue("seaweed")
    for name in _AWS_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    return server.fresh_url()

"""``stateserver serve`` with invalid configuration: a clear message on stderr, a non-zero exit, no
traceback, and nothing started."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from lifecycle_node import clean_environment, free_port, run_cli

USAGE = 2


def serve_args(data_dir: Path, *extra: str) -> list[str]:
    return ["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--data-dir", str(data_dir), *extra]


def assert_refused(result: subprocess.CompletedProcess[str], exit_code: int, *fragments: str) -> None:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for fragment in fragments:
        assert fragment in result.stderr


def test_bad_port(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "70000", "--data-dir", str(tmp_path / "data"))
    assert_refused(result, USAGE, "setting 'port': must be an integer from 1 to 65535, got '70000' (from --port)")


def test_bad_port_from_the_environment(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "data"),
                     environ=clean_environment(STATESERVER_PORT="seven"))
    assert_refused(result, USAGE, "setting 'port': must be an integer", "(from STATESERVER_PORT)")


def test_unwritable_data_directory(tmp_path: Path) -> None:
    # Under a regular file: no one can create it, root included.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli(*serve_args(blocker / "data"))
    assert_refused(result, USAGE, "setting 'data_dir': must be a directory the node can create and write to",
                   "Not a directory")


@pytest.mark.parametrize("url", ["ftp://bucket/prefix", "s3://Bad_Bucket/x", "file://relative/path", "snapshots"])
def test_malformed_snapshot_url(tmp_path: Path, url: str) -> None:
    result = run_cli(*serve_args(tmp_path / "data", "--snapshot-url", url))
    assert_refused(result, USAGE, "setting 'snapshot_url': must ", f"got {url!r} (from --snapshot-url)")


def test_unknown_key_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "stateserver.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nprot = 7700\n')
    result = run_cli("serve", "--config", str(config))
    assert_refused(result, USAGE, f"unknown setting 'prot' in {config}; did you mean 'port'?")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--snapshot-url", "ftp://x",
                     "--log-level", "loud")
    assert_refused(result, USAGE, "setting 'port'", "setting 'snapshot_url'", "setting 'log_level'")


def test_port_in_use_fails_the_start(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert_refused(result, 1, "node cannot start", f"cannot listen on 127.0.0.1:{port}")

"""Real ``stateserver serve`` processes for the lifecycle tests, and runs of the CLI.

A node runs as a child process in its own session on free loopback ports (gRPC and metrics),
logging JSON lines to a file, and gets SIGKILL from the kernel if the test process dies
(PR_SET_PDEATHSIG). It counts as started once ``grpc.health.v1`` answers SERVING.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from stateserver.node.health import check_health

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def stateserver_command() -> list[str]:
    """The installed console script, as operators run it; ``python -m`` when there is none."""
    script = Path(sys.executable).with_name("stateserver")
    return [str(script)] if script.exists() else [sys.executable, "-m", "stateserver.cli"]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without STATESERVER_* variables a developer may have set."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("STATESERVER_")}
    return environ | extra


def run_cli(*args: str, environ: dict[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*stateserver_command(), *args], capture_output=True, text=True, timeout=timeout,
                          env=environ if environ is not None else clean_environment(), stdin=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(kw_only=True)
class ServedNode:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    data_dir: Path
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def scrape(self) -> Samples:
        """Every sample of the metrics endpoint, by (name, labels)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL if the node has not exited after ``timeout``. The exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def serve(data_dir: Path, *, extra_args: Sequence[str] = (), attempts: int = 3) -> ServedNode:
    """Start ``stateserver serve`` on ``data_dir`` and wait until it is serving.

    Free ports are found before the node binds them, so another process may take one in
    between; the node then exits and we try again with other ports.
    """
    problem = ""
    for attempt in range(attempts):
        port, metrics_port = free_port(), free_port()
        log_path = data_dir.parent / f"{data_dir.name}-{port}.log"
        args = [*stateserver_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", str(data_dir), "--metrics-port", str(metrics_port), "--workers", "1", *extra_args]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=clean_environment(), start_new_session=True, preexec_fn=_die_with_parent())
        node = ServedNode(process=process, port=port, metrics_port=metrics_port, data_dir=data_dir, log_path=log_path)
        problem = _wait_until_serving(node)
        if not problem:
            return node
        node.kill()
    raise RuntimeError(f"the node did not start after {attempts} attempts: {problem}")


@contextlib.contextmanager
def served(data_dir: Path, **options: object) -> Iterator[ServedNode]:
    node = serve(data_dir, **options)  # type: ignore[arg-type]
    try:
        yield node
    finally:
        node.terminate()


def _wait_until_serving(node: ServedNode) -> str:
    """'' once the node serves, else what went wrong with the node's log."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            return f"exited with {node.process.returncode}:\n" + "\n".join(node.log_lines()[-20:])
        if check_health(node.address, timeout=1.0).serving:
            return ""
        time.sleep(0.05)
    return f"not serving after {STARTUP_TIMEOUT_S}s:\n" + "\n".join(node.log_lines()[-20:])


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, called after
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)

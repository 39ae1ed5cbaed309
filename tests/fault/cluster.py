"""The nodes and the store a fault trial runs against, kept across trials.

Three fault-injecting nodes (``support.fault_node``) that know each other, on one snapshot store
(a ``file://`` directory or a SeaweedFS prefix). Trials use distinct namespaces, so the nodes and
the store are started once per session; a node is restarted (on its own data directory and port)
only when a fault killed it. On ``file://`` the nodes log their writes and fsyncs
(``support.power_loss``), so that ``power_loss`` can take from the store what a node did not make
durable before it is restarted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from stateserver.store import ObjectStore, RetryingObjectStore, open_store
from support.fault_node import launch_fault_node
from support.node import wait_serving
from support.fault_control import count_events, write_control
from support.node import NodeProcess, free_loopback_port
from support.power_loss import PowerLoss, apply_power_loss, log_size

NODES = 3
RETAINED_CHECKPOINTS = 2


@dataclasses.dataclass
class StoreTarget:
    """A snapshot store as the node, the in-process CLI and the test each open it."""

    kind: str  # "file" or "s3"
    url: str
    options: dict[str, str]

    @property
    def cli_args(self) -> list[str]:
        args = ["--snapshot-url", self.url]
        for key, value in self.options.items():
            args += ["--snapshot-option", f"{key}={value}"]
        return args

    def open(self) -> ObjectStore:
        return RetryingObjectStore(open_store(self.url, options=self.options or None))

    @property
    def root(self) -> Path | None:
        """The directory of a ``file://`` store (None for S3)."""
        return Path(self.url.removeprefix("file://")) if self.kind == "file" else None


class FaultCluster:
    def __init__(self, root: Path, target: StoreTarget) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.control_path = root / "faults.json"
        # In port order: node i is then the i-th in every list a node or client sorts, in every run.
        self.ports = sorted(free_loopback_port() for _ in range(NODES))
        self.nodes: dict[str, NodeProcess] = {}
        self.power_log = root / "power.log" if target.root is not None else None
        # Where the power log stood when each node was launched: its events come after.
        self._log_offsets: dict[str, int] = {}
        self.store = target.open()
        self._generation = 0
        self._restarts = 0
        self.clear_faults()

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def _launch(self, address: str) -> NodeProcess:
        port = int(address.rsplit(":", 1)[1])
        self._restarts += 1
        power = None
        if self.power_log is not None and self.target.root is not None:
            self._log_offsets[address] = log_size(self.power_log)
            power = (self.power_log, self.target.root)
        return launch_fault_node(self.root / f"node-{port}", port=port, control_path=self.control_path,
                                 log_label=f"-{self._restarts}", power_log=power,
                                 extra_args=[*self.target.cli_args, "--nodes", ",".join(self.addresses),
                                             "--retained-checkpoints", str(RETAINED_CHECKPOINTS),
                                             "--upload-threads", "4", "--worker-threads", "8"])

    def start(self) -> None:
        launched = {address: self._launch(address) for address in self.addresses}
        for address, node in launched.items():
            self.nodes[address] = wait_serving(node)

    def kill(self, address: str) -> None:
        self.nodes[address].kill()

    def power_loss(self, address: str) -> PowerLoss | None:
        """SIGKILL the node and lose what it wrote to the store and did not make durable (file://
        only; on S3 a plain kill, and None). The caller restarts it."""
        node = self.nodes[address]
        alive = node.is_alive()
        node.kill()
        if self.power_log is None or self.target.root is None or not alive:
            return None
        return apply_power_loss(self.power_log, self.target.root, node.pid,
                                offset=self._log_offsets.get(address, 0))

    def dead(self) -> list[str]:
        return [address for address, node in self.nodes.items() if not node.is_alive()]

    def restart_dead(self) -> list[str]:
        """Start every killed node again on its data directory; returns their addresses."""
        dead = self.dead()
        launched = {address: self._launch(address) for address in dead}
        for address, node in launched.items():
            self.nodes[address] = wait_serving(node)
        return dead

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    # -- store faults ----------------------------------------------------------------------

    def set_faults(self, seed: int, rules: list[dict[str, object]]) -> None:
        self._generation += 1
        write_control(self.control_path, seed=seed, generation=self._generation, rules=rules)

    def clear_faults(self) -> None:
        self.set_faults(0, [])

    def fault_events(self) -> dict[str, int]:
        return count_events(self.control_path)

    def log_tails(self, namespace: str, lines: int = 12) -> str:
        """The last lines about ``namespace`` (and every warning or error) in each node's log."""
        parts = []
        for address, node in self.nodes.items():
            text = node.log_tail(2000).splitlines()
            relevant = [line for line in text if namespace in line or '"level":"error"' in line
                        or '"level":"warning"' in line]
            parts.append(f"--- {address} ({node.log_path})\n" + "\n".join(relevant[-lines:]))
        return "\n".join(parts)


def run_cli_in_process(*args: str) -> tuple[int, str]:
    """``stateserver ARGS`` in this process (no interpreter start-up per call): exit code, output."""
    from stateserver.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, out.getvalue()


def start_cli(*args: str) -> subprocess.Popen[str]:
    """``stateserver ARGS`` as a subprocess running in the background."""
    script = Path(sys.executable).with_name("stateserver")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "stateserver.cli"]
    return subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, env=dict(os.environ))


@contextlib.contextmanager
def running_cluster(root: Path, target: StoreTarget) -> Iterator[FaultCluster]:
    cluster = FaultCluster(root, target)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

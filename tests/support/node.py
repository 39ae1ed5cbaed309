"""A real stateserver node for tests: ``python -m stateserver.cli serve`` on a free loopback port.

The node runs as a child process in its own session, with its log in its data directory's
parent, and gets SIGKILL from the kernel if the test process dies (PR_SET_PDEATHSIG), so it
cannot outlive the tests. It counts as started once the standard gRPC health service
(``grpc.health.v1``) answers SERVING for the StateService. ``stop()`` sends SIGTERM (the node
drains and closes its shards, flushing memtables) and SIGKILL after a timeout.

A node runs ``--workers 1`` (one process, as before workers existed) unless the test asks for
more, or the session runs with ``STATESERVER_TEST_WORKERS=N``: then every node these launchers
start runs N worker processes under a supervisor (ports port .. port+N-1, all free), and counts as
started once its health service ``""`` (the node as a whole) says SERVING.

With several workers a test that looks past the client asks ``NodeProcess`` which worker a shard
belongs on (``shard_worker``, ``shard_stub``, ``shard_data_dir``; ``support/routing_stub.py`` routes
every raw request so), and where each worker keeps its data (``worker_data_dirs``).

Also here: small raw-stub helpers for tests that must send what the client never would.
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stateserver.protocol import placement, wire
from stateserver.protocol.keygroups import key_group_for
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc

SERVICE_NAME = "stateserver.v1.StateService"

# The interpreter that runs nodes: this one, unless the tests run in a client-only environment
# (scripts/test_client_only.sh), where nodes come from the full install.
NODE_PYTHON = os.environ.get("STATESERVER_TEST_NODE_PYTHON") or sys.executable
NODE_HEALTH_SERVICE = ""  # the node as a whole: with several workers, SERVING only while every one is
# Popped, so that no node sees it: STATESERVER_TEST_WORKERS is a near miss of the setting `workers`.
TEST_WORKERS = int(os.environ.pop("STATESERVER_TEST_WORKERS", "") or 1)
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
REASON_METADATA_KEY = "stateserver-reason"


class NodeStartError(RuntimeError):
    """The node did not start; the message ends with the tail of its log."""


@dataclass(kw_only=True)
class NodeProcess:
    """A running node: its process, address, data directory and log."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    max_message_bytes: int
    workers: int = 1
    _channels: dict[int, grpc.Channel] = field(default_factory=dict, repr=False)  # by worker index

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    @property
    def worker_addresses(self) -> list[str]:
        """Where each worker listens (one worker: the node's own address)."""
        return node_workers(self.address, self.workers)

    def worker_pid(self, index: int) -> int:
        """The pid worker ``index`` wrote into its data directory's lock file (several workers only)."""
        return int((self.data_dir / f"worker-{index}" / "node.lock").read_text().strip())

    @property
    def worker_data_dirs(self) -> list[Path]:
        """Where each worker keeps its shards (``worker_data_dirs``)."""
        return worker_data_dirs(self.data_dir, self.workers)

    def shard_worker(self, namespace: str, key_groups: tuple[int, int]) -> int:
        """The worker a shard belongs on when this node is alone (placement among its workers)."""
        shard_id = f"{namespace}/{key_groups[0]}-{key_groups[1]}"
        return self.worker_addresses.index(placement.owner(shard_id, self.worker_addresses))

    def shard_data_dir(self, namespace: str, key_groups: tuple[int, int]) -> Path:
        """The data directory of the worker that holds the shard (this node alone)."""
        return self.worker_data_dirs[self.shard_worker(namespace, key_groups)]

    def worker_channel(self, index: int) -> grpc.Channel:
        """One shared raw channel to worker ``index``, sized like the node's message limit."""
        if index not in self._channels:
            self._channels[index] = grpc.insecure_channel(self.worker_addresses[index], options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
            ])
        return self._channels[index]

    def channel(self) -> grpc.Channel:
        """The channel to the node's own address (worker 0; it also answers the node's health)."""
        return self.worker_channel(0)

    def stub(self) -> state_pb2_grpc.StateServiceStub:
        """A raw stub to worker 0 only: for what any worker answers alike (see ``shard_stub``)."""
        return state_pb2_grpc.StateServiceStub(self.channel())

    def shard_stub(self, namespace: str, key_groups: tuple[int, int]) -> state_pb2_grpc.StateServiceStub:
        """A raw stub to the worker the shard belongs on (this node alone)."""
        return state_pb2_grpc.StateServiceStub(self.worker_channel(self.shard_worker(namespace, key_groups)))

    def health_status(self, service: str = SERVICE_NAME, timeout: float = 2.0) -> int:
        """The health service's answer (``health_pb2.HealthCheckResponse.SERVING`` when well)."""
        stub = health_pb2_grpc.HealthStub(self.channel())
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status  # type: ignore[no-any-return]

    def is_serving(self) -> bool:
        try:
            return self.is_alive() and self.health_status() == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful: the node drains and flushes), SIGKILL after ``timeout``; the exit code."""
        self._close_channels()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode  # type: ignore[no-any-return]

    def kill(self) -> None:
        """SIGKILL at once: a crash, nothing flushed."""
        self._close_channels()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _close_channels(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def node_workers(address: str, workers: int = TEST_WORKERS) -> list[str]:
    """The placement members a node entry ``host:port`` stands for: its workers on port .. port+N-1."""
    host, _, port = address.rpartition(":")
    return [f"{host}:{int(port) + index}" for index in range(workers)]


def worker_data_dirs(data_dir: Path, workers: int = TEST_WORKERS) -> list[Path]:
    """Where each worker of a node on ``data_dir`` keeps its shards: ``data_dir`` itself with one
    worker, ``data_dir/worker-<i>`` with several (stateserver/supervisor/worker_config.py)."""
    if workers == 1:
        return [data_dir]
    return [data_dir / f"worker-{index}" for index in range(workers)]


def start_node(data_dir: Path, *, max_message_bytes: int = 64 << 20, extra_args: Sequence[str] = (),
               attempts: int = 3, port: int | None = None, workers: int | None = None) -> NodeProcess:
    """Start a node on ``data_dir`` and wait until its health service says SERVING.

    The ports are found free before the node binds them, so another process may take one in
    between; the node then exits and we try again with other ports (unless ``port`` is
    given, as a cluster's node list needs). ``workers``: default ``TEST_WORKERS``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or TEST_WORKERS
    last_error: NodeStartError | None = None
    fixed_port = port
    for attempt in range(1, 2 if fixed_port else attempts + 1):
        port = fixed_port or free_port_block(workers)
        log_path = data_dir.parent / f"{data_dir.name}-node-{port}-{attempt}.log"
        args = [NODE_PYTHON, "-m", "stateserver.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", str(data_dir), "--max-message-bytes", str(max_message_bytes),
                "--workers", str(workers), *extra_args]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=_die_with_parent())
        node = NodeProcess(process=process, port=port, data_dir=data_dir, log_path=log_path,
                           max_message_bytes=max_message_bytes, workers=workers)
        try:
            _wait_until_serving(node)
            return node
        except NodeStartError as exc:
            node.stop(timeout=5)
            last_error = exc
    assert last_error is not None
    raise last_error


@contextlib.contextmanager
def run_node(data_dir: Path, **options: object) -> Iterator[NodeProcess]:
    """A node for the ``with`` block, stopped (SIGTERM, then SIGKILL) however the block ends."""
    node = start_node(data_dir, **options)  # type: ignore[arg-type]
    try:
        yield node
    finally:
        node.stop()


_TESTS_DIR = Path(__file__).resolve().parents[1]


def launch_wrapped_node(module: str, data_dir: Path, *, port: int, log_path: Path, args: Sequence[str] = (),
                        environment: dict[str, str] | None = None, max_message_bytes: int = 64 << 20,
                        append_log: bool = False) -> NodeProcess:
    """Start ``python -m <module> serve``: a test-only node module that wraps a real part (its store,
    its fsyncs) before running the real node. ``tests/`` goes on its PYTHONPATH; no wait here."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(environment or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(_TESTS_DIR), os.environ.get("PYTHONPATH")]))}
    # One process: the wrapping happens in this process, which worker processes would not inherit.
    command = [NODE_PYTHON, "-m", module, "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir), "--max-message-bytes", str(max_message_bytes), "--workers", "1", *args]
    with open(log_path, "ab" if append_log else "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True, preexec_fn=_die_with_parent())
    return NodeProcess(process=process, port=port, data_dir=data_dir, log_path=log_path,
                       max_message_bytes=max_message_bytes)


def wait_serving(node: NodeProcess) -> NodeProcess:
    """Wait until ``node`` serves; stop it if it never does (NodeStartError)."""
    try:
        _wait_until_serving(node)
    except NodeStartError:
        node.stop(timeout=5)
        raise
    return node


def _wait_until_serving(node: NodeProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    problem = "no answer yet"
    while time.monotonic() < deadline:
        if not node.is_alive():
            raise NodeStartError(f"the node exited with {node.process.returncode}\n{node.log_tail()}")
        try:
            status = node.health_status(NODE_HEALTH_SERVICE, timeout=1.0)
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            problem = f"health status {status}"
        except grpc.RpcError as exc:
            problem = f"{exc.code().name}"  # type: ignore[attr-defined]
        time.sleep(0.05)
    raise NodeStartError(f"node on {node.address} not serving after {STARTUP_TIMEOUT_S}s ({problem})\n"
                         f"{node.log_tail()}")


def free_loopback_port() -> int:
    """A free port; with ``STATESERVER_TEST_WORKERS=N`` the first of N, so a node's workers fit."""
    return free_port_block(TEST_WORKERS)


def _ephemeral_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_handed_out: set[int] = set()  # ports given to a node of this session: a block must not overlap them


def free_port_block(count: int) -> int:
    """A port P such that P .. P+count-1 are free now and not handed out before (a node's workers)."""
    for _ in range(200):
        base = _ephemeral_port()
        block = range(base, base + count)
        if block[-1] > 65535 or _handed_out.intersection(block) or not all(map(_bindable, block[1:])):
            continue
        _handed_out.update(block)
        return base
    raise RuntimeError(f"found no {count} consecutive free loopback ports")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the test process dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, called after
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- raw requests ----------------------------------------------------------------------------


def shard_ref(namespace: str, key_groups: tuple[int, int], epoch: int) -> pb.ShardRef:
    return pb.ShardRef(namespace=namespace, key_group_start=key_groups[0], key_group_end=key_groups[1], epoch=epoch)


def write_request(ref: pb.ShardRef, state: str, ops: Sequence[int], keys: Sequence[bytes],
                  values: Sequence[bytes] | None = None, map_keys: Sequence[bytes] | None = None,
                  sequence: int = 0) -> pb.WriteBatchRequest:
    """A well-formed packed batch on one state (tests then break the field they are about)."""
    packed_keys, key_lengths = wire.pack(list(keys))
    request = pb.WriteBatchRequest(shard=ref, states=[state], ops=bytes(ops), keys=packed_keys,
                                   key_lengths=key_lengths, sequence=sequence)
    if values is not None:
        request.values, lengths = wire.pack(list(values))
        request.value_lengths.extend(lengths)
    if map_keys is not None:
        request.map_keys, lengths = wire.pack(list(map_keys))
        request.map_key_lengths.extend(lengths)
    return request


def read_request(ref: pb.ShardRef, state: str, op: int, keys: Sequence[bytes],
                 map_keys: Sequence[bytes] | None = None) -> pb.ReadBatchRequest:
    packed_keys, key_lengths = wire.pack(list(keys))
    request = pb.ReadBatchRequest(shard=ref, states=[state], ops=bytes([op]) * len(keys), keys=packed_keys,
                                  key_lengths=key_lengths)
    if map_keys is not None:
        request.map_keys, lengths = wire.pack(list(map_keys))
        request.map_key_lengths.extend(lengths)
    return request


def read_values(stub: state_pb2_grpc.StateServiceStub, request: pb.ReadBatchRequest) -> list[bytes | None]:
    """What the node itself stores (no client buffer in between): one entry per read."""
    reply = stub.ReadBatch(request, timeout=10)
    values = wire.unpack(reply.values, reply.value_lengths)
    return [value if found else None for value, found in zip(values, reply.found)]


def rpc_error_reason(error: grpc.RpcError) -> str:
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == REASON_METADATA_KEY:
            return str(value)
    return ""


def keys_in_key_groups(count: int, max_key_groups: int, start: int, end: int, prefix: str = "k") -> list[str]:
    """``count`` distinct string keys whose key groups (of their UTF-8 bytes) lie in ``start..end``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"{prefix}{i}"
        if start <= key_group_for(key.encode(), max_key_groups) <= end:
            found.append(key)
        i += 1
    return found


_namespace_numbers = itertools.count(1)


def unique_namespace(test_name: str) -> str:
    """A valid namespace name, unique in this test session, that says which test made it."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-.")
    return f"t{next(_namespace_numbers):04d}-{cleaned[:80]}"


def namespace_on_one_worker(node: NodeProcess, test_name: str, key_groups: Sequence[tuple[int, int]]) -> str:
    """A ``unique_namespace`` whose shards of ``key_groups`` all belong on one worker of ``node``:
    for tests of what a node finds in its own data directory (with one worker: any name)."""
    return _namespace_over_workers(node, test_name, key_groups, 1)


def namespace_on_every_worker(node: NodeProcess, test_name: str, key_groups: Sequence[tuple[int, int]]) -> str:
    """A ``unique_namespace`` whose shards of ``key_groups`` leave no worker of ``node`` without one:
    placement among the workers hashes their random ports, so 8 shards miss one of 2 workers in
    about 1 run of 128 (with one worker: any name)."""
    return _namespace_over_workers(node, test_name, key_groups, node.workers)


def _namespace_over_workers(node: NodeProcess, test_name: str, key_groups: Sequence[tuple[int, int]],
                            workers: int) -> str:
    """The first ``unique_namespace`` whose shards of ``key_groups`` land on exactly ``workers`` workers."""
    for _ in range(1000):
        name = unique_namespace(test_name)
        if len({node.shard_worker(name, shard) for shard in key_groups}) == workers:
            return name
    raise AssertionError(f"no namespace puts {len(key_groups)} shards on exactly {workers} of {node.workers} workers")

"""The supervisor of a node of several workers (``stateserver serve --workers N``, N > 1).

It holds ``<data_dir>/node.lock``, starts N worker processes (``stateserver.supervisor.worker``, laid
out by ``stateserver.supervisor.worker_config``), and then:

- restarts a worker that dies, after a backoff (0.5 s doubling to 30 s; back to 0.5 s once a
  worker served for a minute). A restarted worker finds the shards it had as crashed
  directories, which it never serves as they are (design note 9): their writers get
  ``restore-required`` and reopen from a checkpoint (the client's ``recover()``);
- checks every worker's health service twice a second, and tells each worker whether the node as
  a whole serves (every worker does), which each reports as its health service ``""``: the
  node's health endpoint is therefore any worker's port, the node's own address included;
- forwards SIGHUP (reload the node list) to every worker; on SIGTERM or SIGINT forwards SIGTERM,
  so every worker drains as a single node does, and exits once every worker has exited (exit 0
  when each drained cleanly), killing one that outlives the drain by far;
- serves the node's one metrics endpoint (``stateserver.supervisor.metrics``).

A worker failing before the node ever served as a whole (a port taken, a bad store) stops the
node with exit 1, as a single process would: nothing is restarted in a loop at start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import prometheus_client
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stateserver.supervisor.worker_config import dial_host, worker_config
from stateserver.supervisor.metrics import WorkerStatus, node_registry
from stateserver.supervisor.worker import NODE_NOT_SERVING, NODE_SERVING, WorkerStart
from stateserver.node.server import HANDLER_EXIT_SECONDS, SERVICE_NAME, NodeStartError, lock_data_dir
from stateserver.config import Settings

log = logging.getLogger("stateserver.supervisor")

TICK_SECONDS = 0.1
HEALTH_CHECK_SECONDS = 0.5
HEALTH_TIMEOUT_SECONDS = 1.0
RESTART_BACKOFF_MIN = 0.5
RESTART_BACKOFF_MAX = 30.0
# A worker that served this long before it died is restarted after the shortest backoff again.
STABLE_SECONDS = 60.0
# Past the workers' own drain (drain_seconds + handler exit), how long closing shards may take.
CLOSE_GRACE_SECONDS = 60.0


@dataclasses.dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None
    metrics_port: int = 0
    started_at: float = 0.0
    serving: bool = False
    told: bytes | None = None  # what the worker was last told of the node's health
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_MIN
    restart_at: float | None = None


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        if settings.data_dir is None:
            raise ValueError("settings without a data_dir cannot run a node")
        self.settings = settings
        self.data_dir = settings.data_dir
        self._workers = [_Worker(index) for index in range(workers)]
        self._wake = threading.Event()
        self._signals: list[int] = []
        self._reload = False
        self._node_serving = False
        self._ever_served = False
        self._next_health_check = 0.0

    # -- running -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit code (0: every worker drained cleanly)."""
        try:
            lock = lock_data_dir(self.data_dir)
        except NodeStartError as exc:
            log.error("node cannot start", extra={"reason": str(exc)})
            return 1
        try:
            endpoint = self._start_metrics()
        except OSError as exc:
            log.error("node cannot start", extra={"reason": f"cannot serve metrics on {self.settings.metrics_host}:"
                                                            f"{self.settings.metrics_port}: {exc.strerror or exc}"})
            lock.close()
            return 1
        self._install_signal_handlers()
        try:
            for worker in self._workers:
                self._start(worker)
            log.info("node starting workers", extra={"workers": len(self._workers), "data_dir": str(self.data_dir)})
            failed = self._supervise()
            return self._drain(failed)
        finally:
            if endpoint is not None:
                endpoint[0].shutdown()
                endpoint[0].server_close()
            lock.close()

    def _supervise(self) -> bool:
        """Watch the workers until a signal (False) or a worker failing at start (True)."""
        while not self._signals:
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
            if self._reload:
                self._reload = False
                self._signal_workers(signal.SIGHUP)
            now = time.monotonic()
            for worker in self._workers:
                if worker.process is not None and worker.process.poll() is not None:
                    if not self._ever_served:
                        log.error("a worker exited while the node was starting; stopping the node",
                                  extra={"worker": worker.index, "exit_code": worker.process.returncode})
                        return True
                    self._died(worker, now)
                if worker.process is None and worker.restart_at is not None and now >= worker.restart_at:
                    worker.restarts += 1
                    self._start(worker)
            if now >= self._next_health_check:
                self._next_health_check = now + HEALTH_CHECK_SECONDS
                self._check_health()
        log.info("signal received", extra={"signal": signal.Signals(self._signals[0]).name})
        return False

    def _drain(self, failed_at_start: bool) -> int:
        running = [worker for worker in self._workers if worker.process is not None]
        for worker in running:
            self._tell(worker, NODE_NOT_SERVING)
            self._kill(worker, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_seconds + HANDLER_EXIT_SECONDS + CLOSE_GRACE_SECONDS
        clean = not failed_at_start
        for worker in running:
            assert worker.process is not None
            try:
                code = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("a worker did not exit after the drain; killing it", extra={"worker": worker.index})
                self._kill(worker, signal.SIGKILL)
                code = worker.process.wait()
            clean = clean and code == 0
            self._close_channel(worker)
        log.info("node stopped", extra={"workers": len(self._workers), "clean": clean})
        return 0 if clean else 1

    # -- one worker --------------------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        worker.metrics_port = _free_loopback_port() if self.settings.metrics_port else 0
        config = worker_config(self.settings, worker.index, len(self._workers), metrics_port=worker.metrics_port)
        start = WorkerStart(index=worker.index, config=config, log_level=self.settings.log_level,
                            log_format=self.settings.log_format)
        worker.process = subprocess.Popen([sys.executable, "-m", "stateserver.supervisor.worker"], stdin=subprocess.PIPE)
        worker.started_at = time.monotonic()
        worker.restart_at = None
        worker.serving = False
        worker.told = None
        assert worker.process.stdin is not None
        with contextlib.suppress(OSError):
            worker.process.stdin.write(start.encode())
            worker.process.stdin.flush()
        host = dial_host(self.settings.host)
        worker.channel = grpc.insecure_channel(f"{host}:{config.port}")
        log.info("worker started", extra={"worker": worker.index, "pid": worker.process.pid, "port": config.port,
                                          "data_dir": str(config.data_dir), "restarts": worker.restarts})

    def _died(self, worker: _Worker, now: float) -> None:
        assert worker.process is not None
        served_for = now - worker.started_at
        if served_for >= STABLE_SECONDS:
            worker.backoff = RESTART_BACKOFF_MIN
        log.error("worker died; restarting it", extra={
            "worker": worker.index, "pid": worker.process.pid, "exit_code": worker.process.returncode,
            "restart_in_seconds": worker.backoff})
        worker.restart_at = now + worker.backoff
        worker.backoff = min(RESTART_BACKOFF_MAX, worker.backoff * 2)
        if worker.process.stdin is not None:
            with contextlib.suppress(OSError):
                worker.process.stdin.close()
        worker.process = None
        worker.metrics_port = 0
        worker.serving = False
        self._close_channel(worker)

    def _check_health(self) -> None:
        for worker in self._workers:
            worker.serving = worker.process is not None and _serving(worker.channel)
        serving = all(worker.serving for worker in self._workers)
        if serving != self._node_serving:
            log.info("node serving" if serving else "node not serving",
                     extra={"workers_not_serving": [w.index for w in self._workers if not w.serving]})
        self._node_serving = serving
        self._ever_served = self._ever_served or serving
        for worker in self._workers:
            self._tell(worker, NODE_SERVING if serving else NODE_NOT_SERVING)

    def _tell(self, worker: _Worker, status: bytes) -> None:
        if worker.process is None or worker.process.stdin is None or worker.told == status:
            return
        try:
            worker.process.stdin.write(status)
            worker.process.stdin.flush()
            worker.told = status
        except OSError:
            pass  # it died; the next tick sees it

    def _kill(self, worker: _Worker, signum: int) -> None:
        if worker.process is not None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signum)

    def _signal_workers(self, signum: int) -> None:
        for worker in self._workers:
            self._kill(worker, signum)

    @staticmethod
    def _close_channel(worker: _Worker) -> None:
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None

    # -- signals and metrics -----------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def on_stop(signum: int, _frame: object) -> None:
            self._signals.append(signum)  # a second signal while draining changes nothing
            self._wake.set()

        def on_reload(_signum: int, _frame: object) -> None:
            self._reload = True
            self._wake.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_stop)
        signal.signal(signal.SIGHUP, on_reload)

    def _start_metrics(self) -> tuple[object, threading.Thread] | None:
        if not self.settings.metrics_port:
            return None
        registry = node_registry(self.worker_statuses)
        server, thread = prometheus_client.start_http_server(self.settings.metrics_port,
                                                             addr=self.settings.metrics_host, registry=registry)
        return server, thread

    def worker_statuses(self) -> list[WorkerStatus]:
        return [WorkerStatus(index=w.index, metrics_port=w.metrics_port if w.process is not None else 0,
                             serving=w.serving, restarts=w.restarts) for w in self._workers]


def _serving(channel: grpc.Channel | None) -> bool:
    if channel is None:
        return False
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                           timeout=HEALTH_TIMEOUT_SECONDS)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_supervisor(settings: Settings, workers: int) -> int:
    return Supervisor(settings, workers).run()

"""One worker process of a node: ``python -m stateserver.supervisor.worker``, started by the supervisor.

The supervisor writes the worker's start message (``WorkerStart``, pickled, length-prefixed) to
its stdin, then one byte whenever the node as a whole changes health: ``1`` every worker serves,
``0`` one does not. The worker reports that as the health of service ``""`` (the node), and its
own as ``stateserver.v1.StateService``. End of file on stdin means the supervisor is gone: the
worker drains and exits as on SIGTERM, so no worker outlives its node.

Exit codes as ``stateserver serve``: 0 drained and every shard closed cleanly, 1 otherwise.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import signal
import sys
import threading
from grpc_health.v1 import health_pb2

from stateserver.node.logs import configure_logging
from stateserver.node.server import Node, NodeConfig, NodeStartError, exit_code_after_serving

log = logging.getLogger("stateserver.worker")

NODE_SERVING = b"1"
NODE_NOT_SERVING = b"0"
_LENGTH_BYTES = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerStart:
    index: int
    config: NodeConfig
    log_level: str
    log_format: str

    def encode(self) -> bytes:
        payload = pickle.dumps(self)
        return len(payload).to_bytes(_LENGTH_BYTES, "big") + payload


def read_start(fd: int) -> WorkerStart:
    length = int.from_bytes(_read_exactly(fd, _LENGTH_BYTES), "big")
    start = pickle.loads(_read_exactly(fd, length))  # from the supervisor that started us
    if not isinstance(start, WorkerStart):
        raise ValueError("the supervisor sent something other than a WorkerStart")
    return start


def _read_exactly(fd: int, count: int) -> bytes:
    # Unbuffered reads: a daemon thread blocked in a buffered stdin read aborts interpreter exit.
    data = b""
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise EOFError("the supervisor closed the pipe before the worker's start message")
        data += chunk
    return data


class _WorkerField(logging.Filter):
    """Every log line of a worker says which one it is."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def _follow_supervisor(fd: int, node: Node) -> None:
    """Relay the node's health to service ""; on end of file drain as on SIGTERM."""
    while byte := os.read(fd, 1):
        status = health_pb2.HealthCheckResponse.SERVING if byte == NODE_SERVING else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        node.health.set("", status)  # ignored once draining (enter_graceful_shutdown)
    log.warning("the supervisor is gone; draining")
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    stdin = sys.stdin.fileno()
    start = read_start(stdin)
    handler = configure_logging(start.log_level, start.log_format)
    handler.addFilter(_WorkerField(start.index))
    try:
        node = Node(start.config)
    except NodeStartError as exc:
        log.error("node cannot start", extra={"reason": str(exc)})
        return 1
    threading.Thread(target=_follow_supervisor, args=(stdin, node), name="supervisor", daemon=True).start()
    try:
        clean = node.serve_until_signalled()
    except NodeStartError as exc:
        log.error("node cannot start", extra={"reason": str(exc)})
        return 1
    return exit_code_after_serving(node, clean, 1)


if __name__ == "__main__":
    # Run as the importable module, whose WorkerStart is the class the supervisor pickled.
    from stateserver.supervisor import worker
    sys.exit(worker.main())

"""The rule that names a node's workers: a node entry ``host:port`` with N workers per node stands
for the N addresses ``host:port`` .. ``host:port+N-1`` (worker i listens on port + i).

The rule applies to every source of a node list alike (``nodes``, a nodes file, the addresses a
``dns:NAME:PORT`` entry resolves to) and to ``node_id`` and ``advertised_address``, so every
node of a cluster must run the same number of workers. Placement then sees workers as members of
the cluster, and clients learn them from NodeInfo like any other node: no new wire field.
"""
from __future__ import annotations

from collections.abc import Iterable

MAX_PORT = 65535


def worker_address(address: str, index: int) -> str:
    """``host:port`` (IPv6 in brackets) of worker ``index`` of the node at ``address``."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    worker_port = int(port) + index
    if worker_port > MAX_PORT:
        raise ValueError(f"worker {index} of {address} would need port {worker_port}, above {MAX_PORT}")
    return f"{host}:{worker_port}"


def worker_addresses(address: str, workers: int) -> list[str]:
    """Every worker of the node at ``address``, worker 0 first (``address`` itself)."""
    return [worker_address(address, index) for index in range(workers)]


def expand_node_list(entries: Iterable[str], workers: int) -> list[str]:
    """Node entries (already resolved, host:port) to their workers' addresses."""
    if workers == 1:
        return list(entries)
    return [worker for entry in entries for worker in worker_addresses(entry, workers)]

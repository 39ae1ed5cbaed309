"""Where each worker of a node lives: its port, data directory, identity and memory share.

Worker i of a node listens on ``port + i`` (``addresses.worker_address``), keeps its shards in
``<data_dir>/worker-<i>`` under its own ``node.lock``, takes 1/N of the block cache and write
buffers, and is a member of the placement list under its own address. A node without a node
list lists its own workers, so clients route among them as among the nodes of a cluster.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from stateserver.node.addresses import worker_address
from stateserver.node.server import NodeConfig, config_from_settings
from stateserver.config import Settings

WORKER_DIR_PREFIX = "worker-"
# Below this a share of the cache or the write buffers starves RocksDB (one memtable is 16 MiB).
MIN_SHARE_BYTES = 16 << 20


def worker_data_dir(data_dir: Path, index: int) -> Path:
    return data_dir / f"{WORKER_DIR_PREFIX}{index}"


def worker_config(settings: Settings, index: int, workers: int, *, metrics_port: int = 0) -> NodeConfig:
    """The NodeConfig worker ``index`` of ``workers`` runs with (``metrics_port`` 0: no endpoint)."""
    node = config_from_settings(settings)
    # With no node list, this node's own entry, which the rule expands to its workers.
    nodes = node.nodes if node.nodes or node.nodes_file is not None else (settings.node_id,)
    tuning = dataclasses.replace(
        node.tuning, block_cache_bytes=max(node.tuning.block_cache_bytes // workers, MIN_SHARE_BYTES),
        write_buffer_bytes=max(node.tuning.write_buffer_bytes // workers, MIN_SHARE_BYTES))
    # Where the other workers are dialled follows from the rule: no need to ask them at a name that
    # may resolve only outside (or nowhere) before clients can be told.
    siblings = {worker_address(settings.node_id, other): worker_address(node.advertised_address, other)
                for other in range(workers) if other != index} if node.advertised_address else {}
    # Siblings are dialled where they listen, on this machine (a wildcard host: on loopback).
    local = f"{dial_host(node.host)}:{node.port}"
    siblings_at = {worker_address(settings.node_id, other): worker_address(local, other)
                   for other in range(workers) if other != index}
    return dataclasses.replace(
        node, port=node.port + index, data_dir=worker_data_dir(node.data_dir, index),
        node_id=worker_address(settings.node_id, index),
        advertised_address=worker_address(node.advertised_address, index) if node.advertised_address else "",
        nodes=nodes, tuning=tuning, metrics_host="127.0.0.1", metrics_port=metrics_port,
        workers_per_node=workers, supervised=True, known_advertised=siblings, siblings=siblings_at)


def dial_host(host: str) -> str:
    """Where a process on this machine reaches a worker bound to ``host`` (a wildcard: loopback;
    IPv6 in brackets)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


"""How many workers a node runs when ``workers`` is 0: one per core the node may use, capped so
that the block cache, the write buffers and a fixed cost per worker process fit in its memory.

Cores: the CPU affinity mask, lowered by a cgroup v2 CPU quota (a container's ``cpus``). Memory:
``memory_budget_bytes``, else the cgroup v2 memory limit, else the machine's memory.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

MiB = 1 << 20
# What one worker process costs besides its share of the block cache and write buffers: the
# interpreter, gRPC, RocksDB's per-shard tables, readers and threads. Measured (benchmarks/
# bench_node_memory.py): 63 MiB a worker at start; open shards cost about 1.5 MiB each whichever
# worker holds them, so they do not count here.
WORKER_FIXED_BYTES = 128 * MiB
_CGROUP = Path("/sys/fs/cgroup")


def default_workers(*, block_cache_bytes: int, write_buffer_bytes: int, memory_budget_bytes: int | None) -> int:
    """At least 1; at most one per usable core; and within the memory budget."""
    budget = memory_budget_bytes or machine_memory_bytes()
    spare = budget - block_cache_bytes - write_buffer_bytes
    return max(1, min(usable_cores(), spare // WORKER_FIXED_BYTES))


def usable_cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _read(_CGROUP / "cpu.max").split()
    if len(quota) == 2 and quota[0] != "max" and quota[0].isdigit() and quota[1].isdigit() and int(quota[1]) > 0:
        cores = min(cores, math.ceil(int(quota[0]) / int(quota[1])))
    return max(1, cores)


def machine_memory_bytes() -> int:
    limit = _read(_CGROUP / "memory.max").strip()
    if limit.isdigit():
        return int(limit)
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 4096 * MiB  # unknown: a modest machine


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError:
        return ""


def resolve_workers(*, workers: int, port: int, metrics_port: int, block_cache_bytes: int, write_buffer_bytes: int,
                    memory_budget_bytes: int | None) -> int:
    """``workers`` as set (checked at load), or for 0 the default, within the ports above ``port``
    (worker i listens on port + i) and below a metrics port above it."""
    if workers:
        return workers
    count = default_workers(block_cache_bytes=block_cache_bytes, write_buffer_bytes=write_buffer_bytes,
                            memory_budget_bytes=memory_budget_bytes)
    room = (metrics_port if port < metrics_port else 65536) - port
    return max(1, min(count, room))

#!/usr/bin/env python
"""Memory of a whole node (supervisor and every worker) with 500 open shards. Not timed.

    .venv/bin/python benchmarks/bench_node_memory.py            # writes benchmarks/results/node_memory.md
    .venv/bin/python benchmarks/bench_node_memory.py --workers 1 --keys 200000

The node runs with a 1 GiB block cache and 512 MiB of write buffers (split among its workers).
One writer opens 500 shards (2 key groups each of 1000), writes ``--keys`` values of 100 bytes,
takes a checkpoint (flushes every memtable into SSTs and uploads them to a file:// store), then
reads a sample back. After each phase the RSS and PSS of every process of the node are read from
/proc; the goal (issue 14) is at most 2 GiB in all. RSS counts shared pages (the interpreter,
libraries) once per process, so the RSS sum overstates; PSS shares them out.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stateserver.client import BYTES, StateClient  # noqa: E402
from stateserver.node.health import check_health  # noqa: E402
from bench_common import cpu_model, log, version  # noqa: E402

MiB = 1 << 20
SHARDS = 500
MAX_KEY_GROUPS = 1000
VALUE_BYTES = 100
GOAL_BYTES = 2 << 30
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "node_memory.md"


def free_port_block(count: int) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


def node_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [supervisor, *map(int, children)]


def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) * 1024
    return rss, pss


def measure(phase: str, supervisor: int) -> dict[str, object]:
    pids = node_pids(supervisor)
    figures = [memory_of(pid) for pid in pids]
    row = {"phase": phase, "processes": len(pids), "rss": sum(f[0] for f in figures),
           "pss": sum(f[1] for f in figures), "per_process_rss": [f[0] for f in figures]}
    log(f"{phase}: {len(pids)} processes, RSS {row['rss'] / MiB:.0f} MiB, PSS {row['pss'] / MiB:.0f} MiB")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=0, help="0: the node's default (one per core)")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-node-memory-") as scratch:
        data_dir, store = Path(scratch) / "data", (Path(scratch) / "store").as_uri()
        port = free_port_block(max(options.workers, os.cpu_count() or 1))
        command = [sys.executable, "-m", "stateserver.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--data-dir", str(data_dir), "--snapshot-url", store, "--block-cache-bytes", "1GiB",
                   "--write-buffer-bytes", "512MiB", "--workers", str(options.workers), "--log-level", "warning"]
        shown = "stateserver serve " + " ".join(command[4:]).replace(scratch, "$TMP")
        node = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not check_health(f"127.0.0.1:{port}", timeout=1.0).serving:
                if time.monotonic() > deadline or node.poll() is not None:
                    raise SystemExit("the node did not start")
                time.sleep(0.1)
            rows = [measure("started", node.pid)]
            with StateClient(f"127.0.0.1:{port}", timeout=120) as client:
                workers = len(client.refresh())
                client.create_namespace("memory", max_key_groups=MAX_KEY_GROUPS)
                step = MAX_KEY_GROUPS // SHARDS
                ranges = [f"{start}-{start + step - 1}" for start in range(0, MAX_KEY_GROUPS, step)]
                writer = client.open_writer("memory", key_groups=ranges, epoch=1)
                rows.append(measure(f"{len(ranges)} shards open", node.pid))
                values = writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
                rng = random.Random(7)
                keys = [rng.randbytes(16) for _ in range(options.keys)]
                for key in keys:
                    values.put(key, rng.randbytes(VALUE_BYTES))
                writer.flush()
                rows.append(measure(f"{options.keys:,} values written", node.pid))
                writer.snapshot(1)
                client.commit_checkpoint("memory", 1, writer.await_snapshot(1), writers=[writer])
                rows.append(measure("checkpoint 1 committed", node.pid))
                for key in rng.sample(keys, min(50_000, len(keys))):
                    values.get(key)
                rows.append(measure("50,000 values read", node.pid))
                writer.close()
        finally:
            node.terminate()
            node.wait(60)

    peak = max(int(row["rss"]) for row in rows)  # type: ignore[call-overload]
    lines = [
        "# Node memory with 500 open shards",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_node_memory.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
        f"Node: `{shown}`  ",
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')} on {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, rocksdict {version('rocksdict')}, grpcio {version('grpcio')}.",
        "",
        f"{workers} workers (plus the supervisor), 1 GiB block cache and 512 MiB write buffers split among them; "
        f"{SHARDS} shards, {options.keys:,} values of {VALUE_BYTES} B. Goal: at most 2 GiB in all.",
        "",
        "| phase | processes | RSS, sum | PSS, sum | RSS per process (MiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        per = ", ".join(f"{value / MiB:.0f}" for value in row["per_process_rss"])  # type: ignore[attr-defined]
        lines.append(f"| {row['phase']} | {row['processes']} | {int(row['rss']) / MiB:.0f} MiB | "  # type: ignore[call-overload]
                     f"{int(row['pss']) / MiB:.0f} MiB | {per} |")  # type: ignore[call-overload]
    lines += ["", f"Peak RSS of the node: {peak / MiB:.0f} MiB, "
              f"{'within' if peak <= GOAL_BYTES else 'ABOVE'} the 2 GiB goal."]
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text("\n".join(lines) + "\n")
    log(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Issue 14's acceptance run: a node of 1 and of 2 workers, embedded rocksdict and Redis, interleaved.

    .venv/bin/python benchmarks/bench_acceptance.py            # 200k keys, 2 rounds: writes benchmarks/results/acceptance.md
    .venv/bin/python benchmarks/bench_acceptance.py --keys 50000 --rounds 1 --no-write   # a smoke run

Same data as bench_state.py (16-byte random keys, 100-byte values, 1000-key batches). Each round
runs every system once, in turn: node `--workers 1` and `--workers 2` with the sync and the
asyncio client (and, for the 1-worker node, the sync client sending its write batches in stored
form instead of the default plain form; which goes first alternates by round), embedded rocksdict (a single
database, and the node's layout of 8 shard databases as the baseline for the node's own work), Redis MSET/MGET plain and 16 pipelined. CPU time per
key is read from /proc for each process (the benchmark process is the client; each worker, the
supervisor, redis-server), so load from other processes on the machine does not count, and the
ratios are taken per round. The writer holds 8 shards (16 key groups each) so that placement
spreads them over both workers. Afterwards: single-key latencies with an empty gRPC call (health
check) to the same worker as the baseline, and a projection for a 16-core machine.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import gc
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from bench_common import cpu_model, goal_row, log  # noqa: E402
from bench_state import (  # noqa: E402
    BATCH, KEY_BYTES, VALUE_BYTES, Data, EmbeddedBench, NodeProcess, RedisProcess, check, process_cpu_seconds,
    percentiles, redis_version, settle, versions,
)
from stateserver.client import BYTES, StateClient  # noqa: E402
from stateserver.client.aio import AsyncStateClient  # noqa: E402

MAX_KEY_GROUPS = 128
SHARDS = [f"{start}-{start + 15}" for start in range(0, MAX_KEY_GROUPS, 16)]
PIPELINE = 16
CORES_PROJECTED = 16
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "acceptance.md"


# -- CPU per process ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return sorted(found)


@dataclasses.dataclass
class Run:
    keys: int
    seconds: float
    cpu: dict[str, float]  # process name -> CPU seconds during the run

    @property
    def rate(self) -> float:
        return self.keys / self.seconds

    def per_key(self, name: str) -> float:
        """µs of CPU per key of the processes whose names start with ``name``."""
        return sum(v for k, v in self.cpu.items() if k.startswith(name)) / self.keys * 1e6


@contextlib.contextmanager
def measured(keys: int, processes: dict[str, int], out: list[Run]) -> Iterator[None]:
    everything = {"client": os.getpid(), **processes}
    before = {name: process_cpu_seconds(pid) for name, pid in everything.items()}
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    out.append(Run(keys, seconds, {name: process_cpu_seconds(pid) - before[name] for name, pid in everything.items()}))


# -- the node, with either client -------------------------------------------------------------------


class NodeSystem:
    def __init__(self, root: Path, workers: int, data: Data, get_call_keys: int) -> None:
        self.workers = workers
        self.node = NodeProcess(root / f"node-{workers}", root / f"node-{workers}.log", ["--workers", str(workers)])
        self.data = data
        self.get_call_keys = get_call_keys
        if workers == 1:
            self.processes = {"worker 0": self.node.pid}
        else:
            deadline = time.monotonic() + 30
            while len(children(self.node.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
            self.processes = {"supervisor": self.node.pid,
                              **{f"worker {i}": pid for i, pid in enumerate(children(self.node.pid))}}
        self.client = StateClient(self.node.address)
        self.loop = asyncio.new_event_loop()
        self.aclient = self.loop.run_until_complete(self._aclient())
        self.round = 0

    async def _aclient(self) -> AsyncStateClient:
        return AsyncStateClient(self.node.address)

    def _namespace(self) -> str:
        self.round += 1
        name = f"bench{self.round}"
        self.client.create_namespace(name, MAX_KEY_GROUPS)
        return name

    def run_sync(self, puts: list[Run], gets: list[Run], *, stored_writes: bool = False) -> None:
        writer = self.client.open_writer(self._namespace(), key_groups=SHARDS, epoch=1)
        if stored_writes:  # keys with their key-group prefix, values with their header (reads always are)
            for session in writer.sessions:
                session.core.stored_form_writes = True
        state = writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
        self.spread = len({s.connection.address for s in writer.sessions})
        with measured(len(self.data.keys), self.processes, puts):
            for batch in self.data.put_batches:
                state.put_many(batch)
            writer.flush()
        settle(list(self.processes.values()))
        calls = self.data.chunks(self.data.shuffled, self.get_call_keys)
        results: list[bytes | None] = []
        with measured(len(self.data.shuffled), self.processes, gets):
            for call in calls:
                results += state.get_many(call)
        check("node get_many", self.data, self.data.shuffled, results)
        self.writer, self.state = writer, state

    def run_async(self, puts: list[Run], gets: list[Run]) -> None:
        self.loop.run_until_complete(self._run_async(puts, gets))

    async def _run_async(self, puts: list[Run], gets: list[Run]) -> None:
        writer = await self.aclient.open_writer(self._namespace(), key_groups=SHARDS, epoch=1)
        state = await writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
        with measured(len(self.data.keys), self.processes, puts):
            for batch in self.data.put_batches:
                await state.put_many(batch)
            await writer.flush()
        settle(list(self.processes.values()))
        calls = self.data.chunks(self.data.shuffled, self.get_call_keys)
        results: list[bytes | None] = []
        with measured(len(self.data.shuffled), self.processes, gets):
            for call in calls:
                results += await state.get_many(call)
        check("node async get_many", self.data, self.data.shuffled, results)
        await writer.close()

    def close_round(self) -> None:
        self.writer.close()

    def latencies(self, samples: int) -> dict[str, tuple[float, float]]:
        """Single-key get on the sync client, and an empty unary call to the same worker."""
        keys, state = self.data.shuffled, self.state
        key = keys[0]
        address = self.writer.session_for(key).connection.address
        own = [k for k in keys[:20_000] if self.writer.session_for(k).connection.address == address]
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            # Alternated call by call: on a shared machine the load drifts within seconds, and
            # a p99 taken over one stretch against another compares the load, not the calls.
            empty, get = interleaved_latencies(lambda i: health.Check(request),
                                               lambda i: state.get(own[i % len(own)]), samples)
        return {"empty call": empty, "get": get}

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.aclient.close())
        self.loop.close()
        self.node.stop()


def interleaved_latencies(first: Callable[[int], object], second: Callable[[int], object], samples: int,
                          warmup: int = 50) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p50, p99) in µs of ``first`` and of ``second``, ``samples`` calls each, taken in turn
    (which goes first alternates, so neither always follows the other)."""
    for i in range(warmup):
        first(i)
        second(i)
    clock = time.perf_counter_ns
    timings: tuple[list[int], list[int]] = ([], [])
    for i in range(samples):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            operation = first if which == 0 else second
            start = clock()
            operation(i)
            timings[which].append(clock() - start)
    return percentiles(timings[0]), percentiles(timings[1])


# -- Redis, plain and pipelined ----------------------------------------------------------------------


def redis_runs(redis: RedisProcess, data: Data, results: dict[str, list[Run]]) -> None:
    client, processes = redis.client, {"redis-server": redis.pid}
    client.flushall()
    with measured(len(data.keys), processes, results.setdefault("redis MSET", [])):
        for batch in data.put_batches:
            client.mset(batch)
    client.flushall()
    with measured(len(data.keys), processes, results.setdefault(f"redis MSET x{PIPELINE} pipelined", [])):
        for start in range(0, len(data.put_batches), PIPELINE):
            pipe = client.pipeline(transaction=False)
            for batch in data.put_batches[start:start + PIPELINE]:
                pipe.mset(batch)
            pipe.execute()
    batches = data.chunks(data.shuffled, BATCH)
    found: list[bytes | None] = []
    with measured(len(data.shuffled), processes, results.setdefault("redis MGET", [])):
        for batch in batches:
            found += client.mget(batch)
    check("redis MGET", data, data.shuffled, found)
    found = []
    with measured(len(data.shuffled), processes, results.setdefault(f"redis MGET x{PIPELINE} pipelined", [])):
        for start in range(0, len(batches), PIPELINE):
            pipe = client.pipeline(transaction=False)
            for batch in batches[start:start + PIPELINE]:
                pipe.mget(batch)
            for reply in pipe.execute():
                found += reply
    check("redis pipelined MGET", data, data.shuffled, found)


def embedded_runs(embedded: EmbeddedBench, results: dict[str, list[Run]], pool: object) -> None:
    """EmbeddedBench measures its own process (RocksDB's threads included): converted to Runs."""
    from bench_state import Measured

    # The node's layout first: what RocksDB itself does for the node's load (8 shards, a column
    # family each, 4000-key writes as the client sends them by default, 1000 as it used to).
    for name, keys_per_write in (("embedded put node layout 1000", BATCH), ("embedded put node layout 4000", 4 * BATCH)):
        out: list[Measured] = []
        embedded.put_node_layout(out, len(SHARDS), keys_per_write)
        settle([os.getpid()])
        results.setdefault(name, []).append(Run(out[0].keys, out[0].seconds, {"client": out[0].client_cpu}))
    for name, action in (("embedded put 1000", lambda out: embedded.put(out)),
                         ("embedded put 4000", lambda out: embedded.put(out, batches_per_write=4))):
        embedded.open()
        out = []
        action(out)
        settle([os.getpid()])
        results.setdefault(name, []).append(Run(out[0].keys, out[0].seconds, {"client": out[0].client_cpu}))
        if name == "embedded put 1000":
            embedded.close()
    for name, action in (("embedded get 1 thread", lambda out: embedded.get(out)),
                         ("embedded get threaded", lambda out: embedded.get_threaded(pool, out))):  # type: ignore[arg-type]
        out = []
        action(out)
        results.setdefault(name, []).append(Run(out[0].keys, out[0].seconds, {"client": out[0].client_cpu}))
    embedded.close()


# -- the run ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import concurrent.futures

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--get-call-keys", type=int, default=16_000)
    parser.add_argument("--latency-samples", type=int, default=5000)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "benchmarks/bench_acceptance.py", *(argv if argv is not None else sys.argv[1:])])
    data = Data.make(options.keys, options.seed)
    gc.collect()
    gc.freeze()
    redis_executable = None if options.no_redis else shutil.which("redis-server")
    results: dict[str, list[Run]] = {}
    latencies: dict[str, tuple[float, float]] = {}
    spread: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-acceptance-") as tmp:
        root = Path(tmp)
        nodes = {w: NodeSystem(root, w, data, options.get_call_keys) for w in (1, 2)}
        redis = RedisProcess(redis_executable, root) if redis_executable else None
        embedded = EmbeddedBench(root / "embedded", data, options.get_call_keys, threads=4)
        pool = concurrent.futures.ThreadPoolExecutor(4)
        everything = [os.getpid(), *(pid for n in nodes.values() for pid in n.processes.values())]
        try:
            for round_number in range(1, options.rounds + 1):
                last = round_number == options.rounds
                for workers, node in nodes.items():
                    # The 1-worker node runs both write forms; which goes first alternates by round,
                    # so neither always meets the other's leftovers (memtables, compactions).
                    forms = [False, True] if workers == 1 else [False]
                    if round_number % 2 == 0:
                        forms.reverse()
                    for stored_writes in forms:
                        label = "stored-writes " if stored_writes else ""
                        log(f"round {round_number}: node, {workers} worker(s), sync client"
                            f"{', stored-form writes' * stored_writes}")
                        node.run_sync(results.setdefault(f"node{workers} {label}put", []),
                                      results.setdefault(f"node{workers} {label}get", []), stored_writes=stored_writes)
                        settle(everything)
                        if not stored_writes:
                            spread[workers] = node.spread
                            if last:
                                log(f"node, {workers} worker(s): single-key latency")
                                for name, figures in node.latencies(options.latency_samples).items():
                                    latencies[f"node {workers} worker(s): {name}"] = figures
                        node.close_round()
                        settle(everything)
                    log(f"round {round_number}: node, {workers} worker(s), asyncio client")
                    node.run_async(results.setdefault(f"node{workers} aio put", []),
                                   results.setdefault(f"node{workers} aio get", []))
                    settle(everything)
                log(f"round {round_number}: embedded")
                embedded_runs(embedded, results, pool)
                settle(everything)
                if redis:
                    log(f"round {round_number}: redis")
                    redis_runs(redis, data, results)
                    if last:
                        ping, get = interleaved_latencies(lambda i: redis.client.ping(),
                                                          lambda i: redis.client.get(data.shuffled[i % len(data.shuffled)]),
                                                          options.latency_samples)
                        latencies["redis GET (1 key)"], latencies["redis PING (empty call)"] = get, ping
                    redis.client.flushall()
                    settle(everything)
        finally:
            pool.shutdown()
            for node in nodes.values():
                node.stop()
            if redis:
                redis.stop()
    report = render(results, latencies, spread, options, command,
                    redis_version(redis_executable) if redis_executable else "absent")
    print(report)
    if not options.no_write:
        options.output.write_text(report)
        log(f"wrote {options.output}")
    return 0


# -- the report ---------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def render(results: dict[str, list[Run]], latencies: dict[str, tuple[float, float]], spread: dict[int, int],
           options: argparse.Namespace, command: str, redis_version_text: str) -> str:
    def rate(name: str) -> float:
        return median([r.rate for r in results.get(name, [])])

    def cpu(name: str, process: str) -> float:
        return median([r.per_key(process) for r in results.get(name, [])])

    def ratio(top: str, *bottoms: str) -> float:
        """Median over rounds of top / the best of ``bottoms`` in the same round."""
        rounds = zip(results.get(top, []), *(results.get(b, []) for b in bottoms))
        return median([t.rate / max(b.rate for b in bs) for t, *bs in rounds])

    lines = [
        "# Issue 14 acceptance: node (1 and 2 workers) vs embedded rocksdict vs Redis",
        "",
        f"Written by `benchmarks/bench_acceptance.py` on {datetime.date.today().isoformat()}. Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        f"{options.keys:,} keys of {KEY_BYTES} random bytes, values of {VALUE_BYTES} bytes, 1000-key put batches "
        f"(`put_many`), gets as `get_many` of {options.get_call_keys:,} random keys; {options.rounds} rounds, every "
        f"system once per round in turn; medians over rounds. CPU µs per key from /proc of each process (client = "
        f"this benchmark process; for embedded it includes RocksDB's own threads). The writer holds {len(SHARDS)} "
        f"shards of 16 key groups; with 2 workers they were placed on {spread.get(2, '?')} worker(s).",
        "",
        "| measurement | keys/s | client µs/key | node/server µs/key (per process) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, runs in results.items():
        if not runs:
            continue
        processes = [p for p in runs[0].cpu if p != "client"]
        server = ", ".join(f"{p} {cpu(name, p):.2f}" for p in processes)
        if len(processes) > 1:
            server += f"; all {sum(cpu(name, p) for p in processes):.2f}"
        lines.append(f"| {name} | {rate(name) / 1e3:,.0f}k | {cpu(name, 'client'):.2f} | {server or '–'} |")

    def node_cpu(name: str) -> float:
        runs = results.get(name, [])
        return median([sum(v for k, v in r.cpu.items() if k != "client") / r.keys * 1e6 for r in runs])

    lines += ["", "## Ratios and goals", "", "| ratio | measured | goal | met |", "| --- | ---: | ---: | --- |"]

    def goal(label: str, value: float, target: float | None) -> None:
        row = goal_row(label, value, target)
        if row is not None:
            lines.append(row)

    goal("node 2 workers puts / best embedded puts (default worker count here)",
         ratio("node2 put", "embedded put 1000", "embedded put 4000"), 0.7)
    goal("node 2 workers gets / best embedded gets", ratio("node2 get", "embedded get 1 thread", "embedded get threaded"), 0.7)
    goal("node 1 worker puts / best embedded puts", ratio("node1 put", "embedded put 1000", "embedded put 4000"), None)
    goal("node 1 worker gets / best embedded gets", ratio("node1 get", "embedded get 1 thread", "embedded get threaded"), None)
    goal("node 2 workers / 1 worker, puts", ratio("node2 put", "node1 put"), None)
    goal("node 2 workers / 1 worker, gets", ratio("node2 get", "node1 get"), None)
    goal("asyncio / sync client, puts (2 workers)", ratio("node2 aio put", "node2 put"), 0.8)
    goal("asyncio / sync client, gets (2 workers)", ratio("node2 aio get", "node2 get"), 0.8)
    goal("node 1 worker, plain-form writes (default) / stored-form writes, puts",
         ratio("node1 put", "node1 stored-writes put"), None)
    if results.get("redis MSET"):
        goal("node 2 workers puts / Redis MSET x16 pipelined", ratio("node2 put", f"redis MSET x{PIPELINE} pipelined"), None)
        goal("node 2 workers gets / Redis MGET x16 pipelined", ratio("node2 get", f"redis MGET x{PIPELINE} pipelined"), None)

    # What the node spends per key above RocksDB: node CPU minus embedded rocksdict doing the same
    # RocksDB work (same options; for puts the node's layout and the batches the client sends).
    lines += ["", "## Node CPU per key above RocksDB's own work", "",
              "Node CPU per key (all its processes) against embedded rocksdict's CPU per key for the same RocksDB "
              "work, with the node's options (`RocksResources(RocksTuning())`, the serve defaults). Puts: the node's "
              f"layout, {len(SHARDS)} databases of contiguous key-group ranges with the state in a column family, "
              "keys and values as RocksDB stores them, one `db.write` per 4000 keys of one shard (the client's "
              "default per-shard write batches). Gets: threaded 1000-key multi-gets. The difference "
              "is what Python, gRPC and protobuf cost on the node; goal at most 10% of node CPU. The last column is "
              "the baseline used before: one database, 4000-key writes into its default column family (one 16 MiB "
              "memtable that fills and flushes inside the measurement, where the node's 8 memtables do not: it "
              "overstated RocksDB's own work for this load, so understated the node's overhead).", "",
              "| | node µs/key | embedded µs/key | above RocksDB µs/key | share of node CPU | before: one database |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, node_name, embedded_name, old_name in (
            ("puts, 1 worker", "node1 put", "embedded put node layout 4000", "embedded put 4000"),
            ("puts, 1 worker, stored-form writes", "node1 stored-writes put", "embedded put node layout 4000",
             "embedded put 4000"),
            ("puts, 2 workers", "node2 put", "embedded put node layout 4000", "embedded put 4000"),
            ("gets, 1 worker", "node1 get", "embedded get threaded", ""),
            ("gets, 2 workers", "node2 get", "embedded get threaded", "")):
        n, e = node_cpu(node_name), cpu(embedded_name, "client")
        old = cpu(old_name, "client") if old_name else math.nan
        before = "" if math.isnan(old) else f"{old:.2f} µs, {(n - old) / n:.0%}"
        if not math.isnan(n) and not math.isnan(e):
            lines.append(f"| {label} | {n:.2f} | {e:.2f} | {n - e:.2f} | {(n - e) / n:.0%} | {before} |")

    if results.get("redis MSET"):
        lines += ["", f"## Projection for a {CORES_PROJECTED}-core machine", "",
                  f"Node: one worker per core, each key costs the node's measured CPU per key (2-worker run, all its "
                  f"processes, RocksDB's flushes and compactions included), clients on other machines: "
                  f"{CORES_PROJECTED} cores × 10⁶ / (µs per key). Redis: one process, one core: "
                  f"10⁶ / (redis-server µs per key), pipelined.", "",
                  "| | node µs/key | node keys/s projected | redis-server µs/key | Redis keys/s projected | ratio | goal | met |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for label, node_name, redis_name in (("puts", "node2 put", f"redis MSET x{PIPELINE} pipelined"),
                                             ("gets", "node2 get", f"redis MGET x{PIPELINE} pipelined")):
            n, r = node_cpu(node_name), cpu(redis_name, "redis-server")
            node_rate, redis_rate = CORES_PROJECTED * 1e6 / n, 1e6 / r
            projected = node_rate / redis_rate
            lines.append(f"| {label} | {n:.2f} | {CORES_PROJECTED} × 10⁶ / {n:.2f} = {node_rate / 1e6:.2f}M | {r:.2f} "
                         f"| 10⁶ / {r:.2f} = {redis_rate / 1e6:.2f}M | {projected:.1f}x | ≥ 4x | "
                         f"{'yes' if projected >= 4 else '**no**'} |")
    if latencies:
        lines += ["", "## Single-key latency", "",
                  f"{options.latency_samples:,} sequential calls each, the two kinds alternated call by call (sync client; "
                  "keys of one worker, the empty call to that worker: a gRPC health check). Goal: get p99 at most 1.5x "
                  "the empty call's p99.", "",
                  "| operation | p50 µs | p99 µs |", "| --- | ---: | ---: |"]
        for name, (p50, p99) in latencies.items():
            lines.append(f"| {name} | {p50:,.0f} | {p99:,.0f} |")
        for workers in (1, 2):
            get, empty = latencies.get(f"node {workers} worker(s): get"), latencies.get(f"node {workers} worker(s): empty call")
            if get and empty:
                lines.append(f"\n{workers} worker(s): get p99 / empty call p99 = {get[1] / empty[1]:.2f}x (goal ≤ 1.5x)")
    info = versions()
    lines += ["", "## Setup", "",
              f"- machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}; "
              "shared with other work, so rates vary between runs: compare within a run",
              f"- Python {platform.python_version()}; grpcio {info['grpcio']}, rocksdict {info['rocksdict']}, "
              f"protobuf {info['protobuf']} ({info['protobuf backend']}); redis-server {redis_version_text}, "
              f"redis-py {info['redis']}, hiredis {info['hiredis']}",
              "- node: `python -m stateserver.cli serve --workers N` on loopback, default settings", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

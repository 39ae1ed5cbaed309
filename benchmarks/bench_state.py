#!/usr/bin/env python
"""Keyed-state throughput: a stateserver node against embedded rocksdict and Redis, in one run.

    .venv/bin/python benchmarks/bench_state.py            # ~1M keys, writes benchmarks/results/state_throughput.md
    .venv/bin/python benchmarks/bench_state.py --quick    # ~100k keys, a smoke run

Every system stores the same keys (16 random bytes) with the same values (100 random bytes),
in the same 1000-key batches. A round loads fresh stores (node, embedded, Redis in turn), then
reads every key back in random order from each; the figures are medians over the rounds and
the ratios are taken per round, so load from other processes on the machine affects both
sides of a ratio alike. See benchmarks/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import gc
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import rocksdict  # noqa: E402

from stateserver.client import BYTES, StateClient  # noqa: E402
from stateserver.client._shard_core import BatchLimits, read_batch_size  # noqa: E402
from stateserver.shard.rocks import RocksResources, RocksTuning  # noqa: E402
from stateserver.protocol.keygroups import KEY_GROUP_PREFIXES, stable_hash  # noqa: E402
from stateserver.protocol.stored_form import PLAIN_HEADER  # noqa: E402
from stateserver.node.server import NodeConfig  # noqa: E402
from stateserver.protocol.v1 import state_pb2 as pb  # noqa: E402
from stateserver.protocol.v1 import state_pb2_grpc  # noqa: E402
from bench_common import cpu_model, goal_row, log, version  # noqa: E402  (benchmarks/ is the script's directory)

KEY_BYTES = 16
VALUE_BYTES = 100
BATCH = 1000
MAX_KEY_GROUPS = 128
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "state_throughput.md"


# -- processes and CPU accounting ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def settle(pids: Sequence[int], *, idle_fraction: float = 0.05, limit: float = 20.0) -> None:
    """Wait until background work (RocksDB flushes and compactions) in ``pids`` has died down,
    so that one system's compaction does not run during the next system's measurement."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(process_cpu_seconds(pid) for pid in pids)
        time.sleep(0.25)
        if sum(process_cpu_seconds(pid) for pid in pids) - before < idle_fraction * 0.25 * len(pids):
            return


@dataclasses.dataclass
class Measured:
    keys: int
    seconds: float
    client_cpu: float  # seconds of this process's CPU
    server_cpu: float  # seconds of the server process's CPU (0 when there is none)

    @property
    def rate(self) -> float:
        return self.keys / self.seconds


@contextlib.contextmanager
def measure(keys: int, server_pid: int | None, out: list[Measured]) -> Iterator[None]:
    server_before = process_cpu_seconds(server_pid) if server_pid else 0.0
    times_before = os.times()
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    times_after = os.times()
    client_cpu = (times_after.user - times_before.user) + (times_after.system - times_before.system)
    server_cpu = process_cpu_seconds(server_pid) - server_before if server_pid else 0.0
    out.append(Measured(keys, seconds, client_cpu, server_cpu))


class NodeProcess:
    """A real node (``python -m stateserver.cli serve``) on a free loopback port: one process
    unless ``extra_args`` asks for ``--workers`` (serve's default is one worker per core)."""

    def __init__(self, data_dir: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        if "--workers" not in extra_args:
            extra_args = ["--workers", "1", *extra_args]
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.log_path = log_path
        # Defaults only: no STATESERVER_* settings from the environment, no metrics endpoint.
        environment = {name: value for name, value in os.environ.items() if not name.startswith("STATESERVER_")}
        self.command = [sys.executable, "-m", "stateserver.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                        "--data-dir", str(data_dir), "--metrics-port", "0", *extra_args]
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                        env=environment)
        self.pid = self.process.pid
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = state_pb2_grpc.StateServiceStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the node exited with {self.process.returncode}:\n{self.log_path.read_text()}")
                try:
                    stub.NodeInfo(pb.NodeInfoRequest(), timeout=1.0)
                    return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise RuntimeError(f"the node did not answer within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class RedisProcess:
    """redis-server on a free loopback port, no RDB snapshots and no append-only file."""

    def __init__(self, executable: str, work_dir: Path) -> None:
        import redis  # imported here: Redis is optional

        self.port = free_port()
        self.process = subprocess.Popen(
            [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(work_dir), "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.pid = self.process.pid
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        self.parser = type(self.client.connection_pool.get_connection()._parser).__name__

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the data -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
    keys: list[bytes]
    values: list[bytes]
    put_batches: list[dict[bytes, bytes]]  # the load, 1000 keys a batch, in key order
    shuffled: list[bytes]  # every key once, in random order, for reads

    @classmethod
    def make(cls, count: int, seed: int) -> Data:
        rng = random.Random(seed)
        key_blob = rng.randbytes(KEY_BYTES * count)
        value_blob = rng.randbytes(VALUE_BYTES * count)
        keys = [key_blob[i : i + KEY_BYTES] for i in range(0, len(key_blob), KEY_BYTES)]
        if len(set(keys)) != count:
            raise RuntimeError("random keys collided; use another seed")
        values = [value_blob[i : i + VALUE_BYTES] for i in range(0, len(value_blob), VALUE_BYTES)]
        batches = [dict(zip(keys[i : i + BATCH], values[i : i + BATCH])) for i in range(0, count, BATCH)]
        shuffled = list(keys)
        rng.shuffle(shuffled)
        return cls(keys, values, batches, shuffled)

    def chunks(self, keys: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
        return [keys[i : i + size] for i in range(0, len(keys), size)]


def check(name: str, data: Data, keys: Sequence[bytes], results: Sequence[bytes | None]) -> None:
    expected = dict(zip(data.keys, data.values))
    wrong = sum(1 for key, got in zip(keys, results) if got != expected[key])
    if wrong or len(results) != len(keys):
        raise RuntimeError(f"{name}: {wrong} of {len(keys)} reads returned the wrong value")


# -- the three systems --------------------------------------------------------------------------


class NodeBench:
    def __init__(self, node: NodeProcess, data: Data, get_call_keys: int, max_in_flight: int) -> None:
        self.node = node
        self.data_dir = node.data_dir
        self.data = data
        self.get_call_keys = get_call_keys
        self.client = StateClient(node.address, max_in_flight=max_in_flight)
        self.writer = None
        self.state = None
        self.round = 0

    def open(self) -> None:
        """A fresh namespace each round, so each round loads a fresh shard (its own RocksDB)."""
        self.round += 1
        namespace = f"bench{self.round}"
        self.client.create_namespace(namespace, MAX_KEY_GROUPS)
        self.writer = self.client.open_writer(namespace, key_groups=f"0-{MAX_KEY_GROUPS - 1}", epoch=1)
        self.state = self.writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)

    def put(self, out: list[Measured]) -> None:
        put_many, flush = self.state.put_many, self.writer.flush
        with measure(len(self.data.keys), self.node.pid, out):
            for batch in self.data.put_batches:
                put_many(batch)
            flush()

    def get(self, out: list[Measured], keys: Sequence[bytes] | None = None, call_keys: int | None = None) -> None:
        keys = self.data.shuffled if keys is None else keys
        calls = self.data.chunks(keys, call_keys or self.get_call_keys)
        get_many = self.state.get_many
        results: list[list[bytes | None]] = []
        with measure(len(keys), self.node.pid, out):
            for call in calls:
                results.append(get_many(call))
        check("node get_many", self.data, keys, [v for r in results for v in r])

    def close(self) -> None:
        """Close the round's shard and delete it from the node's disk."""
        self.writer.close()
        shutil.rmtree(self.data_dir / "namespaces" / f"bench{self.round}" / "shards", ignore_errors=True)


class EmbeddedBench:
    """rocksdict in this process, opened with the options a node's shard uses."""

    def __init__(self, root: Path, data: Data, get_call_keys: int, threads: int) -> None:
        self.root = root
        self.data = data
        self.get_call_keys = get_call_keys
        self.threads = threads
        self.resources = RocksResources(RocksTuning())
        self.db: rocksdict.Rdict | None = None
        self.round = 0

    def open(self) -> None:
        self.round += 1
        path = self.root / f"round-{self.round}"
        self.db = rocksdict.Rdict(str(path), self.resources.options())
        self.db.set_write_options(self.resources.write_options())  # disable_wal, as the node's shards
        assert self.resources.write_options().disable_wal == (not RocksTuning().write_ahead_log)

    def put(self, out: list[Measured], batches_per_write: int = 1) -> None:
        """Every key into a fresh store, ``batches_per_write`` of the 1000-key batches per ``db.write``."""
        db = self.db
        grouped = [{k: v for b in self.data.put_batches[i:i + batches_per_write] for k, v in b.items()}
                   for i in range(0, len(self.data.put_batches), batches_per_write)]
        with measure(len(self.data.keys), None, out):
            for batch in grouped:
                writes = rocksdict.WriteBatch(raw_mode=True)
                put = writes.put
                for key, value in batch.items():
                    put(key, value)
                db.write(writes)

    def put_node_layout(self, out: list[Measured], shards: int, keys_per_write: int = BATCH) -> None:
        """The RocksDB work a node does for the same load: ``shards`` databases of contiguous
        key-group ranges, each key in its state's column family in stored form (key-group prefix,
        value header), ``keys_per_write`` keys of one shard per ``db.write`` (the client's
        per-shard batches), the batches filled without Python per key as the node fills them.
        Key groups are computed before the clock starts: the node's client does that."""
        self.round += 1
        width = -(-MAX_KEY_GROUPS // shards)
        stored = [[] for _ in range(shards)]  # type: list[list[tuple[bytes, bytes]]]
        for key, value in zip(self.data.keys, self.data.values):
            group = stable_hash(key) % MAX_KEY_GROUPS
            stored[group // width].append((KEY_GROUP_PREFIXES[group] + key, PLAIN_HEADER + value))
        writes: list[tuple[int, list[bytes], list[bytes]]] = []
        for start in range(0, max(map(len, stored)), keys_per_write):  # shards in turn, as the client sends
            for shard, items in enumerate(stored):
                if items[start:start + keys_per_write]:
                    chunk = items[start:start + keys_per_write]
                    writes.append((shard, [k for k, _ in chunk], [v for _, v in chunk]))
        databases = []
        for shard in range(shards):
            db = rocksdict.Rdict(str(self.root / f"round-{self.round}-shard-{shard}"), self.resources.options())
            db.set_write_options(self.resources.write_options())
            db.create_column_family("v", self.resources.options())
            databases.append((db, db.get_column_family_handle("v")))
        with measure(len(self.data.keys), None, out):
            for shard, keys, values in writes:
                db, handle = databases[shard]
                batch = rocksdict.WriteBatch(raw_mode=True)
                batch.set_default_column_family(handle)
                collections.deque(map(batch.put, keys, values), maxlen=0)
                db.write(batch)
        for db, handle in databases:
            del handle
            path = db.path()
            db.close()
            shutil.rmtree(path, ignore_errors=True)

    def get(self, out: list[Measured]) -> None:
        db = self.db
        batches = self.data.chunks(self.data.shuffled, BATCH)
        results: list[list[bytes | None]] = []
        with measure(len(self.data.shuffled), None, out):
            for batch in batches:
                results.append(db[batch])
        check("embedded multi-get", self.data, self.data.shuffled, [v for r in results for v in r])

    def get_threaded(self, pool: concurrent.futures.ThreadPoolExecutor, out: list[Measured]) -> None:
        """As the node serves reads: 1000-key multi-gets on worker threads, ``get_call_keys``
        keys (that many batches) in flight at a time."""
        db = self.db
        calls = self.data.chunks(self.data.shuffled, self.get_call_keys)
        results: list[list[bytes | None]] = []
        with measure(len(self.data.shuffled), None, out):
            for call in calls:
                for found in pool.map(db.__getitem__, self.data.chunks(call, BATCH)):
                    results.append(found)
        check("embedded threaded multi-get", self.data, self.data.shuffled, [v for r in results for v in r])

    def close(self) -> None:
        path = self.db.path()
        self.db.close()
        self.db = None
        shutil.rmtree(path, ignore_errors=True)


class RedisBench:
    def __init__(self, redis_process: RedisProcess, data: Data, pipeline_depth: int) -> None:
        self.redis = redis_process
        self.client = redis_process.client
        self.data = data
        self.depth = pipeline_depth

    def open(self) -> None:
        self.client.flushall()

    def put(self, out: list[Measured]) -> None:
        mset = self.client.mset
        with measure(len(self.data.keys), self.redis.pid, out):
            for batch in self.data.put_batches:
                mset(batch)

    def get(self, out: list[Measured]) -> None:
        mget = self.client.mget
        batches = self.data.chunks(self.data.shuffled, BATCH)
        results: list[list[bytes | None]] = []
        with measure(len(self.data.shuffled), self.redis.pid, out):
            for batch in batches:
                results.append(mget(batch))
        check("redis MGET", self.data, self.data.shuffled, [v for r in results for v in r])

    def get_pipelined(self, out: list[Measured]) -> None:
        """``depth`` MGETs of 1000 keys sent together in one pipeline (that many in flight)."""
        batches = self.data.chunks(self.data.shuffled, BATCH)
        results: list[list[bytes | None]] = []
        with measure(len(self.data.shuffled), self.redis.pid, out):
            for start in range(0, len(batches), self.depth):
                pipe = self.client.pipeline(transaction=False)
                for batch in batches[start : start + self.depth]:
                    pipe.mget(batch)
                results.extend(pipe.execute())
        check("redis pipelined MGET", self.data, self.data.shuffled, [v for r in results for v in r])


# -- latency ----------------------------------------------------------------------------------------


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0
    return at(0.50), at(0.99)


def latency(operation: Callable[[int], object], samples: int, warmup: int = 50) -> tuple[float, float]:
    for i in range(warmup):
        operation(i)
    timings = []
    clock = time.perf_counter_ns
    for i in range(samples):
        start = clock()
        operation(i)
        timings.append(clock() - start)
    return percentiles(timings)


# -- the run ----------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def versions() -> dict[str, str]:
    found = {package: version(package) for package in ("grpcio", "rocksdict", "protobuf", "redis", "hiredis", "xxhash")}
    from google.protobuf.internal import api_implementation

    found["protobuf backend"] = api_implementation.Type()
    return found


def redis_version(executable: str) -> str:
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown"
    return next((part.split("=", 1)[1] for part in out.split() if part.startswith("v=")), out.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, help="keys stored (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="about 100k keys and fewer latency samples")
    parser.add_argument("--rounds", type=int, help="fresh loads and read passes per system (default 3; 2 with --quick)")
    parser.add_argument("--get-call-keys", type=int, default=16_000,
                        help="keys per get_many call, all in flight at once (default 16000)")
    parser.add_argument("--embedded-threads", type=int, default=4, help="worker threads for embedded multi-gets")
    parser.add_argument("--latency-samples", type=int, help="single-key samples per latency figure (default 2000)")
    parser.add_argument("--max-in-flight", type=int, default=BatchLimits().max_in_flight,
                        help="write batches in flight per shard (the client's BatchLimits.max_in_flight)")
    parser.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `stateserver serve`, e.g. --node-arg=--worker-threads=4 (repeatable)")
    parser.add_argument("--no-redis", action="store_true", help="skip Redis even when redis-server is installed")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file (markdown)")
    parser.add_argument("--no-write", action="store_true", help="print the results, do not write the file")
    options = parser.parse_args(argv)
    count = options.keys or (100_000 if options.quick else 1_000_000)
    rounds = options.rounds or (2 if options.quick else 3)
    samples = options.latency_samples or (500 if options.quick else 2000)
    in_flight = math.ceil(options.get_call_keys / BATCH)  # embedded and Redis: 1000-key batches in flight
    command = " ".join([".venv/bin/python", "benchmarks/bench_state.py", *(argv if argv is not None else sys.argv[1:])])

    log(f"making {count:,} keys")
    data = Data.make(count, options.seed)
    gc.collect()
    gc.freeze()  # the inputs live all run: keep the collector from rescanning them

    redis_executable = None if options.no_redis else shutil.which("redis-server")
    redis_note = ""
    if options.no_redis:
        redis_note = "skipped (--no-redis)"
    elif redis_executable is None:
        redis_note = "skipped: redis-server is not installed (apt-get install -y redis-server)"
    else:
        try:
            import hiredis  # noqa: F401
            import redis  # noqa: F401
        except ImportError as exc:
            redis_executable, redis_note = None, f"skipped: {exc}"

    results: dict[str, list[Measured]] = {}

    def slot(name: str) -> list[Measured]:
        return results.setdefault(name, [])

    latencies: dict[str, tuple[float, float]] = {}
    sweep: list[tuple[int, Measured]] = []
    redis_parser = ""
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        root = Path(tmp)
        node = NodeProcess(root / "node", root / "node.log", options.node_arg)
        redis_process = None
        try:
            if redis_executable:
                (root / "redis").mkdir()
                redis_process = RedisProcess(redis_executable, root / "redis")
                redis_parser = redis_process.parser
            node_bench = NodeBench(node, data, options.get_call_keys, options.max_in_flight)
            embedded = EmbeddedBench(root / "embedded", data, options.get_call_keys, options.embedded_threads)
            redis_bench = RedisBench(redis_process, data, in_flight) if redis_process else None
            pool = concurrent.futures.ThreadPoolExecutor(options.embedded_threads, thread_name_prefix="multiget")
            own = [os.getpid()]
            for round_number in range(1, rounds + 1):
                last = round_number == rounds
                log(f"round {round_number}/{rounds}: node puts")
                node_bench.open()
                node_bench.put(slot("node put"))
                settle([node.pid])
                log(f"round {round_number}/{rounds}: embedded puts")
                embedded.open()
                embedded.put(slot("embedded put"))
                settle(own)
                # The node's client grows a batch up to 4x while the node is busy: the same size here.
                embedded.open()
                embedded.put(slot("embedded put 4000"), batches_per_write=4)
                settle(own)
                if redis_bench:
                    log(f"round {round_number}/{rounds}: redis puts")
                    redis_bench.open()
                    redis_bench.put(slot("redis put"))
                log(f"round {round_number}/{rounds}: gets")
                node_bench.get(slot("node get"))
                embedded.get(slot("embedded get"))
                embedded.get_threaded(pool, slot("embedded get threaded"))
                if redis_bench:
                    redis_bench.get(slot("redis get"))
                    redis_bench.get_pipelined(slot("redis get pipelined"))
                if last:
                    log("in-flight sweep and latencies")
                    subset = data.shuffled[: min(count, 200_000)]
                    for call_keys in (1000, 4000, 8000, 16_000, 32_000):
                        measured: list[Measured] = []
                        node_bench.get(measured, subset, call_keys)
                        sweep.append((call_keys, measured[0]))
                    state, writer = node_bench.state, node_bench.writer
                    keys, values = data.shuffled, data.values
                    latencies["node get (1 key)"] = latency(lambda i: state.get(keys[i]), samples)

                    def put_flush(i: int) -> None:
                        state.put(keys[i], values[i])
                        writer.flush()

                    latencies["node put + flush (1 key)"] = latency(put_flush, samples)
                    db = embedded.db
                    latencies["embedded get (1 key)"] = latency(lambda i: db[keys[i]], samples)
                    latencies["embedded put (1 key)"] = latency(lambda i: db.put(keys[i], values[i]), samples)
                    if redis_bench:
                        client = redis_bench.client
                        latencies["redis GET (1 key)"] = latency(lambda i: client.get(keys[i]), samples)
                        latencies["redis SET (1 key)"] = latency(lambda i: client.set(keys[i], values[i]), samples)
                node_bench.close()
                embedded.close()
                settle([node.pid, *own])
            pool.shutdown()
        finally:
            if redis_process:
                redis_process.stop()
            node.stop()

    report = render(
        results=results, sweep=sweep, latencies=latencies, count=count, rounds=rounds, in_flight=in_flight,
        options=options, command=command, redis_note=redis_note,
        redis_version=redis_version(redis_executable) if redis_executable else "", redis_parser=redis_parser,
    )
    print(report)
    if not options.no_write:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(report)
        log(f"wrote {options.output}")
    return 0


# -- the report ----------------------------------------------------------------------------------


def read_batches(call_keys: int, limits: BatchLimits) -> str:
    """How the client splits one get_many of ``call_keys`` keys, e.g. "4 batches of 4000"."""
    size = read_batch_size(call_keys, limits)
    count = math.ceil(call_keys / size)
    return f"{count} batch{'es' if count > 1 else ''} of {min(size, call_keys)}"


def render(*, results: dict[str, list[Measured]], sweep: list[tuple[int, Measured]],
           latencies: dict[str, tuple[float, float]], count: int, rounds: int, in_flight: int,
           options: argparse.Namespace, command: str, redis_note: str, redis_version: str, redis_parser: str) -> str:
    def rate(name: str) -> float:
        return median([m.rate for m in results.get(name, [])])

    def ratio(top: str, bottom: str) -> float:
        """Median of per-round ratios: both sides measured in the same round."""
        pairs = zip(results.get(top, []), results.get(bottom, []))
        return median([a.rate / b.rate for a, b in pairs])

    def best_embedded_put_ratio() -> float:
        pairs = zip(results["node put"], results["embedded put"], results["embedded put 4000"])
        return median([n.rate / max(e.rate, f.rate) for n, e, f in pairs])

    def best_embedded_get_ratio() -> float:
        pairs = zip(results["node get"], results["embedded get"], results["embedded get threaded"])
        return median([n.rate / max(e.rate, t.rate) for n, e, t in pairs])

    def cpu(name: str, which: str) -> str:
        runs = results.get(name, [])
        if not runs:
            return ""
        seconds = median([getattr(m, which) / m.keys * 1e6 for m in runs])
        return f"{seconds:.2f}" if seconds else "–"

    def spread(name: str) -> str:
        rates = [m.rate for m in results.get(name, [])]
        return f"{min(rates) / 1e3:,.0f}–{max(rates) / 1e3:,.0f}k" if rates else ""

    tuning = RocksTuning()
    node_config = NodeConfig(data_dir=Path("."))
    limits = BatchLimits(max_in_flight=options.max_in_flight)
    descriptions = {
        "node put": "node: `ValueState.put_many` of 1000 pairs per call, then `Writer.flush()`",
        "embedded put": "embedded rocksdict: `WriteBatch` of 1000 puts, `db.write`, WAL off",
        "embedded put 4000": "embedded rocksdict: `WriteBatch` of 4000 puts (the client's largest), `db.write`, WAL off",
        "redis put": "Redis: `MSET` of 1000 keys per call",
        "node get": f"node: `ValueState.get_many` of {options.get_call_keys:,} random keys per call "
                    f"({read_batches(options.get_call_keys, limits)} in flight)",
        "embedded get": "embedded rocksdict: multi-get `db[keys]` of 1000 random keys, one thread",
        "embedded get threaded": f"embedded rocksdict: multi-get of 1000 random keys on {options.embedded_threads} "
                                 f"worker threads, {in_flight} batches in flight",
        "redis get": "Redis: `MGET` of 1000 random keys per call",
        "redis get pipelined": f"Redis: {in_flight} `MGET`s of 1000 keys per pipeline (in flight together)",
    }
    lines = [
        "# Keyed-state throughput: node vs embedded rocksdict vs Redis",
        "",
        f"Written by `benchmarks/bench_state.py` on {datetime.date.today().isoformat()}. Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        f"{count:,} keys of {KEY_BYTES} random bytes, values of {VALUE_BYTES} random bytes, batches of {BATCH} keys; "
        f"{rounds} rounds, each loading fresh stores and reading every key back once in random order. "
        "Figures are medians over the rounds (range in brackets); ratios are medians of per-round ratios. "
        "CPU columns: CPU time per key of this benchmark process (the client, or embedded RocksDB with its "
        "background threads) and of the server process (node or redis-server).",
        "",
        "| measurement | keys/s | range | client CPU µs/key | server CPU µs/key |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, description in descriptions.items():
        if results.get(name):
            lines.append(f"| {description} | {rate(name) / 1e3:,.0f}k | {spread(name)} | {cpu(name, 'client_cpu')} "
                         f"| {cpu(name, 'server_cpu')} |")
    lines += ["", "## Ratios and goals", "", "| ratio | measured | goal | met |", "| --- | ---: | ---: | --- |"]

    def goal(label: str, value: float, target: float | None) -> None:
        row = goal_row(label, value, target)
        if row is not None:
            lines.append(row)

    goal("node puts / embedded puts (1000 a write)", ratio("node put", "embedded put"), None)
    goal("node puts / embedded puts (4000 a write)", ratio("node put", "embedded put 4000"), None)
    goal("node puts / best embedded puts", best_embedded_put_ratio(), 0.7)
    goal("node gets / embedded gets (one thread)", ratio("node get", "embedded get"), 0.5)
    goal("node gets / embedded gets (worker threads)", ratio("node get", "embedded get threaded"), None)
    goal("node gets / best embedded gets", best_embedded_get_ratio(), 0.5)
    if results.get("redis put"):
        goal("node puts / Redis MSET", ratio("node put", "redis put"), 1.0)
        goal("node gets / Redis MGET", ratio("node get", "redis get"), 1.0)
        goal("node gets / Redis pipelined MGET", ratio("node get", "redis get pipelined"), None)
    if redis_note:
        lines += ["", f"Redis: {redis_note}."]
    if sweep:
        lines += ["", "## Node gets by keys per call", "",
                  f"`get_many` over {sweep[0][1].keys:,} random keys, last round; a call's read batches are all in "
                  "flight at once.", "",
                  "| keys per call | read batches in flight | keys/s | client CPU µs/key | node CPU µs/key |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for call_keys, m in sweep:
            lines.append(f"| {call_keys:,} | {read_batches(call_keys, limits)} | {m.rate / 1e3:,.0f}k | "
                         f"{m.client_cpu / m.keys * 1e6:.2f} | {m.server_cpu / m.keys * 1e6:.2f} |")
    if latencies:
        lines += ["", "## Single-key latency", "",
                  f"{options.latency_samples or (500 if options.quick else 2000)} sequential calls each, random stored keys.", "",
                  "| operation | p50 µs | p99 µs |", "| --- | ---: | ---: |"]
        for name, (p50, p99) in latencies.items():
            lines.append(f"| {name} | {p50:,.0f} | {p99:,.0f} |")
    info = versions()
    lines += [
        "",
        "## Setup",
        "",
        f"- machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; grpcio {info['grpcio']}, rocksdict {info['rocksdict']}, "
        f"protobuf {info['protobuf']} ({info['protobuf backend']} backend), xxhash {info['xxhash']}",
        f"- Redis: " + (f"redis-server {redis_version}, redis-py {info['redis']}, hiredis {info['hiredis']} "
                        f"(parser {redis_parser}); no RDB, no AOF, loopback" if redis_version else redis_note),
        f"- node: `python -m stateserver.cli serve` as its own process on loopback"
        + (f" with `{' '.join(options.node_arg)}`" if options.node_arg else "")
        + f", one shard of {MAX_KEY_GROUPS} key groups; default worker threads {node_config.worker_threads}; "
        f"client `BatchLimits(max_ops={limits.max_ops}, max_in_flight={options.max_in_flight}, "
        f"max_ops_when_busy={limits.max_ops_when_busy})`: write batches grow to max_ops_when_busy while every batch "
        "in flight is being applied; a get_many goes out as max_in_flight read batches of max_ops to max_ops_when_busy",
        f"- RocksDB (node shards and embedded alike, from `RocksResources(RocksTuning()).options()`): "
        f"memtable {tuning.memtable_bytes >> 20} MiB with a whole-key bloom filter, "
        f"write-buffer manager {tuning.write_buffer_bytes >> 20} MiB, "
        f"block cache {tuning.block_cache_bytes >> 20} MiB, {tuning.compression} compression, bloom filter 10 bits/key, "
        f"WAL {'on' if tuning.write_ahead_log else 'off'} (`disable_wal` write option); embedded uses the default "
        f"column family, the node one column family per state",
        f"- embedded multi-gets: one thread, and on a pool of {options.embedded_threads} threads "
        "(rocksdict's multi-get releases the GIL, as the node's gRPC worker threads run it)",
        "- load from other processes on the machine varies between runs; compare ratios within one run",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

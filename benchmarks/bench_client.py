#!/usr/bin/env python
"""The client's two faces against one real node: sync ``StateClient`` and asyncio ``AsyncStateClient``.

    .venv/bin/python benchmarks/bench_client.py            # 200k keys, 3 rounds; writes benchmarks/results/client_faces.md
    .venv/bin/python benchmarks/bench_client.py --quick    # 50k keys, 2 rounds, a smoke run

Keys of 16 random bytes, values of 100 random bytes, 1000-key batches. A round loads a fresh
namespace with each face (the face that goes first alternates), then reads every key back in
random order with each face; the figures are medians over the rounds and the aio/sync ratios are
taken per round. CPU is the benchmark process's own (``os.times()``: every thread, the gRPC
threads included) and the node's (``/proc/<pid>/stat``), per key. The last round also measures
single-key latency: a get through each face, alternated sample by sample with an empty unary
call to the same node (the standard health ``Check``, and ``NodeInfo``, which passes the node's
interceptors as a get does), so both see the same load.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from stateserver.client import BYTES, StateClient  # noqa: E402
from stateserver.client.aio import AsyncStateClient  # noqa: E402
from stateserver.protocol.v1 import state_pb2 as pb  # noqa: E402
from stateserver.protocol.v1 import state_pb2_grpc  # noqa: E402
from bench_common import cpu_model, log, version, write_report  # noqa: E402
from bench_state import KEY_BYTES, VALUE_BYTES, Data, Measured, NodeProcess, median, percentiles, process_cpu_seconds, settle  # noqa: E402

MAX_KEY_GROUPS = 128
GET_CALL_KEYS = 16_000
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "client_faces.md"


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process, in µs steps
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def measure(keys: int, node_pid: int, out: list[Measured]) -> Iterator[None]:
    node_before, own_before, start = process_cpu_seconds(node_pid), own_cpu_seconds(), time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    out.append(Measured(keys, seconds, own_cpu_seconds() - own_before, process_cpu_seconds(node_pid) - node_before))


class Faces:
    """Both faces' clients to one node; the asyncio one lives on ``loop``."""

    def __init__(self, node: NodeProcess, data: Data, shards: int = 1) -> None:
        self.node, self.data = node, data
        width = MAX_KEY_GROUPS // shards  # the writer's key groups in ``shards`` ranges (8: as bench_acceptance)
        self.key_groups = [f"{start}-{start + width - 1}" for start in range(0, width * shards, width)]
        self.loop = asyncio.new_event_loop()
        self.sync = StateClient(node.address)
        self.aio: AsyncStateClient = self.loop.run_until_complete(self._aio_client())
        self.namespaces = 0

    async def _aio_client(self) -> AsyncStateClient:
        return AsyncStateClient(self.node.address)

    def _namespace(self) -> str:
        self.namespaces += 1
        return f"bench{self.namespaces}"

    # -- sync ------------------------------------------------------------------------

    def sync_open(self) -> tuple[Any, Any, str]:
        namespace = self._namespace()
        self.sync.create_namespace(namespace, MAX_KEY_GROUPS)
        writer = self.sync.open_writer(namespace, key_groups=self.key_groups, epoch=1)
        return writer, writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES), namespace

    def sync_put(self, state: Any, writer: Any, out: list[Measured]) -> None:
        put, flush = state.put, writer.flush
        with measure(len(self.data.keys), self.node.pid, out):
            for key, value in zip(self.data.keys, self.data.values):
                put(key, value)
            flush()

    def sync_put_many(self, state: Any, writer: Any, out: list[Measured]) -> None:
        put_many, flush = state.put_many, writer.flush
        with measure(len(self.data.keys), self.node.pid, out):
            for batch in self.data.put_batches:
                put_many(batch)
            flush()

    def sync_get_many(self, state: Any, out: list[Measured]) -> None:
        calls = self.data.chunks(self.data.shuffled, GET_CALL_KEYS)
        results = []
        with measure(len(self.data.shuffled), self.node.pid, out):
            for call in calls:
                results.extend(state.get_many(call))
        self._check("sync get_many", results)

    # -- asyncio ---------------------------------------------------------------------

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def aio_open(self) -> tuple[Any, Any, str]:
        namespace = self._namespace()
        await self.aio.create_namespace(namespace, MAX_KEY_GROUPS)
        writer = await self.aio.open_writer(namespace, key_groups=self.key_groups, epoch=1)
        return writer, await writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES), namespace

    def aio_put(self, state: Any, writer: Any, out: list[Measured]) -> None:
        async def load() -> None:
            put = state.put
            for key, value in zip(self.data.keys, self.data.values):
                await put(key, value)
            await writer.flush()
        with measure(len(self.data.keys), self.node.pid, out):
            self.run(load())

    def aio_put_many(self, state: Any, writer: Any, out: list[Measured]) -> None:
        async def load() -> None:
            put_many = state.put_many
            for batch in self.data.put_batches:
                await put_many(batch)
            await writer.flush()
        with measure(len(self.data.keys), self.node.pid, out):
            self.run(load())

    def aio_get_many(self, state: Any, out: list[Measured]) -> None:
        calls = self.data.chunks(self.data.shuffled, GET_CALL_KEYS)

        async def read() -> list[Any]:
            results = []
            for call in calls:
                results.extend(await state.get_many(call))
            return results
        with measure(len(self.data.shuffled), self.node.pid, out):
            results = self.run(read())
        self._check("aio get_many", results)

    def aio_gathered_gets(self, state: Any, out: list[Measured]) -> None:
        """``GET_CALL_KEYS`` single-key gets at a time, gathered: the client coalesces them."""
        calls = self.data.chunks(self.data.shuffled, GET_CALL_KEYS)

        async def read() -> list[Any]:
            results = []
            get = state.get
            for call in calls:
                results.extend(await asyncio.gather(*map(get, call)))
            return results
        with measure(len(self.data.shuffled), self.node.pid, out):
            results = self.run(read())
        self._check("aio gathered gets", results)

    def _check(self, name: str, results: Sequence[bytes | None]) -> None:
        expected = dict(zip(self.data.keys, self.data.values))
        wrong = sum(1 for key, got in zip(self.data.shuffled, results) if got != expected[key])
        if wrong or len(results) != len(self.data.shuffled):
            raise RuntimeError(f"{name}: {wrong} of {len(self.data.shuffled)} reads returned the wrong value")

    def forget(self, namespace: str) -> None:
        shutil.rmtree(self.node.data_dir / "namespaces" / namespace / "shards", ignore_errors=True)

    def close(self) -> None:
        self.sync.close()
        self.run(self.aio.close())
        self.loop.close()


# -- latency: a get and an empty call, alternated -----------------------------------------------


def paired_latency(first: Callable[[int], Any], second: Callable[[int], Any], samples: int,
                   warmup: int = 100) -> tuple[tuple[float, float], tuple[float, float]]:
    for i in range(warmup):
        first(i)
        second(i)
    a, b = [], []
    clock = time.perf_counter_ns
    for i in range(samples):
        start = clock()
        first(i)
        middle = clock()
        second(i)
        a.append(middle - start)
        b.append(clock() - middle)
    return percentiles(a), percentiles(b)


async def paired_latency_async(first: Callable[[int], Awaitable[Any]], second: Callable[[int], Awaitable[Any]],
                               samples: int, warmup: int = 100) -> tuple[tuple[float, float], tuple[float, float]]:
    for i in range(warmup):
        await first(i)
        await second(i)
    a, b = [], []
    clock = time.perf_counter_ns
    for i in range(samples):
        start = clock()
        await first(i)
        middle = clock()
        await second(i)
        a.append(middle - start)
        b.append(clock() - middle)
    return percentiles(a), percentiles(b)


def latencies(faces: Faces, sync_state: Any, aio_state: Any, samples: int) -> dict[str, tuple[float, float]]:
    keys = faces.data.shuffled
    found: dict[str, tuple[float, float]] = {}
    with grpc.insecure_channel(faces.node.address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        node_info = state_pb2_grpc.StateServiceStub(channel).NodeInfo
        health, info = health_pb2.HealthCheckRequest(), pb.NodeInfoRequest()
        get = sync_state.get
        found["sync get (1 key)"], found["sync empty call: health Check"] = paired_latency(
            lambda i: get(keys[i]), lambda i: check(health), samples)
        found["sync get (1 key), again"], found["sync empty call: NodeInfo"] = paired_latency(
            lambda i: get(keys[i]), lambda i: node_info(info), samples)

    async def aio() -> None:
        async with grpc.aio.insecure_channel(faces.node.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            get = aio_state.get
            found["aio get (1 key)"], found["aio empty call: health Check"] = await paired_latency_async(
                lambda i: get(keys[i]), lambda i: check(health), samples)
    faces.run(aio())
    return found


# -- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, help="keys per load (default 200,000; 50,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer keys, rounds and latency samples")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 2 with --quick)")
    parser.add_argument("--latency-samples", type=int, help="samples per latency pair (default 2000; 500 with --quick)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--shards", type=int, default=1, choices=[1, 2, 4, 8, 16, 32, 64, 128],
                        help="shards the writer holds (default 1; 8 as bench_acceptance.py)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print the results, do not write the file")
    options = parser.parse_args(argv)
    count = options.keys or (50_000 if options.quick else 200_000)
    rounds = options.rounds or (2 if options.quick else 3)
    samples = options.latency_samples or (500 if options.quick else 2000)
    command = " ".join([".venv/bin/python", "benchmarks/bench_client.py", *(argv if argv is not None else sys.argv[1:])])

    log(f"making {count:,} keys")
    data = Data.make(count, options.seed)
    gc.collect()
    gc.freeze()
    results: dict[str, list[Measured]] = {}

    def slot(name: str) -> list[Measured]:
        return results.setdefault(name, [])

    lat: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        root = Path(tmp)
        node = NodeProcess(root / "node", root / "node.log")
        faces = Faces(node, data, options.shards)
        try:
            for round_number in range(1, rounds + 1):
                log(f"round {round_number}/{rounds}")
                opened: dict[str, tuple[Any, Any, str]] = {}
                order = ("sync", "aio") if round_number % 2 else ("aio", "sync")
                for face in order:  # puts per key, then put_many, each into a fresh shard
                    for kind in ("put", "put_many"):
                        if face == "sync":
                            writer, state, namespace = faces.sync_open()
                            (faces.sync_put if kind == "put" else faces.sync_put_many)(state, writer, slot(f"sync {kind}"))
                        else:
                            writer, state, namespace = faces.run(faces.aio_open())
                            (faces.aio_put if kind == "put" else faces.aio_put_many)(state, writer, slot(f"aio {kind}"))
                        settle([node.pid])
                        if kind == "put_many":
                            opened[face] = (writer, state, namespace)
                        else:
                            faces.run(writer.close()) if face == "aio" else writer.close()
                            faces.forget(namespace)
                for face in order:
                    writer, state, _ = opened[face]
                    if face == "sync":
                        faces.sync_get_many(state, slot("sync get_many"))
                    else:
                        faces.aio_get_many(state, slot("aio get_many"))
                        faces.aio_gathered_gets(state, slot("aio gathered gets"))
                if round_number == rounds:
                    log("single-key latency")
                    lat = latencies(faces, opened["sync"][1], opened["aio"][1], samples)
                for face in order:
                    writer, _state, namespace = opened[face]
                    faces.run(writer.close()) if face == "aio" else writer.close()
                    faces.forget(namespace)
                settle([node.pid])
        finally:
            faces.close()
            node.stop()

    write_report(render(results, lat, count=count, rounds=rounds, samples=samples, command=command,
                        shards=options.shards), options.output,
                 write=not options.no_write)
    return 0


def render(results: dict[str, list[Measured]], lat: dict[str, tuple[float, float]], *, count: int, rounds: int,
           samples: int, command: str, shards: int = 1) -> str:
    def rate(name: str) -> float:
        return median([m.rate for m in results.get(name, [])])

    def cpu(name: str, which: str) -> float:
        return median([getattr(m, which) / m.keys * 1e6 for m in results.get(name, [])])

    def per_round(top: str, bottom: str, value: Callable[[Measured], float]) -> float:
        return median([value(a) / value(b) for a, b in zip(results.get(top, []), results.get(bottom, []))])

    descriptions = {
        "sync put": "sync: `put` per key, `flush()` at the end",
        "aio put": "aio: `await put` per key, `await flush()` at the end",
        "sync put_many": "sync: `put_many` of 1000 pairs per call, `flush()` at the end",
        "aio put_many": "aio: `await put_many` of 1000 pairs per call, `await flush()` at the end",
        "sync get_many": f"sync: `get_many` of {GET_CALL_KEYS:,} random keys per call",
        "aio get_many": f"aio: `await get_many` of {GET_CALL_KEYS:,} random keys per call",
        "aio gathered gets": f"aio: `asyncio.gather` of {GET_CALL_KEYS:,} single-key `get`s at a time",
    }
    lines = [
        "# The client's faces: sync against asyncio, one node", "",
        f"Written by `benchmarks/bench_client.py` on {datetime.date.today().isoformat()}. Reproduce with:", "",
        "```", command, "```", "",
        f"{count:,} keys of {KEY_BYTES} random bytes, values of {VALUE_BYTES} random bytes; {rounds} rounds, each "
        f"loading a fresh namespace ({shards} shard(s) of {MAX_KEY_GROUPS // shards} key groups) per measurement and reading every key back in "
        "random order; the face that goes first alternates. Medians over the rounds; ratios are medians of "
        "per-round ratios. Client CPU: this process (all its threads); node CPU: the node process.", "",
        "| measurement | keys/s | client CPU µs/key | node CPU µs/key |", "| --- | ---: | ---: | ---: |",
    ]
    for name, description in descriptions.items():
        if results.get(name):
            lines.append(f"| {description} | {rate(name) / 1e3:,.0f}k | {cpu(name, 'client_cpu'):.2f} "
                         f"| {cpu(name, 'server_cpu'):.2f} |")
    lines += ["", "## aio / sync", "", "| pair | throughput | client CPU per key | goal |",
              "| --- | ---: | ---: | --- |"]
    for aio, sync in (("aio put", "sync put"), ("aio put_many", "sync put_many"), ("aio get_many", "sync get_many"),
                      ("aio gathered gets", "sync get_many")):
        if results.get(aio) and results.get(sync):
            lines.append(f"| {aio} / {sync} | {per_round(aio, sync, lambda m: m.rate):.2f}x "
                         f"| {per_round(aio, sync, lambda m: m.client_cpu / m.keys):.2f}x "
                         "| throughput ≥ 0.8x, CPU ≤ 1.5x |")
    if lat:
        lines += ["", "## Single-key latency", "",
                  f"{samples} samples per pair, each sample a get of a random stored key then the empty call, "
                  "so both see the same load.", "",
                  "| call | p50 µs | p99 µs |", "| --- | ---: | ---: |"]
        for name, (p50, p99) in lat.items():
            lines.append(f"| {name} | {p50:,.0f} | {p99:,.0f} |")
        lines += ["", "| ratio | p99 | goal |", "| --- | ---: | --- |"]
        for get, empty in (("sync get (1 key)", "sync empty call: health Check"),
                           ("sync get (1 key), again", "sync empty call: NodeInfo"),
                           ("aio get (1 key)", "aio empty call: health Check")):
            lines.append(f"| {get} / {empty} | {lat[get][1] / lat[empty][1]:.2f}x | ≤ 1.5x |")
    lines += [
        "", "## Setup", "",
        f"- machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; grpcio {version('grpcio')}, protobuf {version('protobuf')}",
        "- node: `python -m stateserver.cli serve` on loopback, default settings; clients with default limits",
        "- load from other processes on the machine varies between runs; compare ratios within one run", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

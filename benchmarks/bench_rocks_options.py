#!/usr/bin/env python
"""RocksDB's own CPU per put key in the node's layout, with the node's options and variations of them.

    .venv/bin/python benchmarks/bench_rocks_options.py [--keys 400000] [--rounds 4]

Embedded rocksdict only, no node: 8 databases of contiguous key-group ranges, the state in a column
family, keys in stored form (key-group prefix) and values with their header, 4000 keys of one shard
per ``db.write`` (as the client sends them). What each variation costs RocksDB for the same load,
so that a change to ``RocksTuning`` can be judged before it is tried on the node (issue 14: the
node's CPU per key is mostly RocksDB's). Variations run in turn, round after round; medians.

CPU per key is the whole process (RocksDB's flush threads included) up to the last write: a flush
still running then is not counted, so a variation whose memtables never fill defers that cost.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import rocksdict  # noqa: E402

from bench_common import cpu_model, log, version, write_report  # noqa: E402
from stateserver.protocol.keygroups import KEY_GROUP_PREFIXES, key_groups_for  # noqa: E402
from stateserver.protocol.stored_form import PLAIN_HEADER  # noqa: E402
from stateserver.shard.rocks import RocksResources, RocksTuning  # noqa: E402

MAX_KEY_GROUPS = 128
SHARDS = 8
KEYS_PER_WRITE = 4000
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "rocks_options.md"


def without_memtable_bloom(options: rocksdict.Options) -> None:
    options.set_memtable_prefix_bloom_ratio(0.0)
    options.set_memtable_whole_key_filtering(False)


@dataclass(frozen=True)
class Variant:
    name: str
    tuning: RocksTuning = field(default_factory=RocksTuning)
    adjust: Callable[[rocksdict.Options], None] | None = None


VARIANTS = (
    Variant("node options (RocksTuning defaults)"),
    Variant("memtables of 4 MiB", replace(RocksTuning(), memtable_bytes=4 << 20)),
    Variant("memtables of 64 MiB", replace(RocksTuning(), memtable_bytes=64 << 20)),
    Variant("no memtable bloom filter", adjust=without_memtable_bloom),
    Variant("no statistics", replace(RocksTuning(), statistics=False)),
)


@dataclass
class Measured:
    keys_per_second: float
    cpu_us_per_key: float
    main_thread_us_per_key: float


def shard_writes(keys: list[bytes], values: list[bytes]) -> list[tuple[int, list[bytes], list[bytes]]]:
    """(shard, stored keys, stored values) per ``db.write``, shards in turn as the client sends them."""
    width = -(-MAX_KEY_GROUPS // SHARDS)
    stored: list[list[tuple[bytes, bytes]]] = [[] for _ in range(SHARDS)]
    for key, value, group in zip(keys, values, key_groups_for(keys, MAX_KEY_GROUPS)):
        stored[group // width].append((KEY_GROUP_PREFIXES[group] + key, PLAIN_HEADER + value))
    writes = []
    for start in range(0, max(map(len, stored)), KEYS_PER_WRITE):
        for shard, items in enumerate(stored):
            chunk = items[start:start + KEYS_PER_WRITE]
            if chunk:
                writes.append((shard, [k for k, _ in chunk], [v for _, v in chunk]))
    return writes


def run(variant: Variant, writes: list[tuple[int, list[bytes], list[bytes]]], keys: int, root: Path) -> Measured:
    resources = RocksResources(variant.tuning)

    def options() -> rocksdict.Options:
        made = resources.options()
        if variant.adjust is not None:
            variant.adjust(made)
        return made

    databases = []
    for shard in range(SHARDS):
        db = rocksdict.Rdict(str(root / f"shard-{shard}"), options())
        db.set_write_options(resources.write_options())
        db.create_column_family("v", options())
        databases.append((db, db.get_column_family_handle("v")))
    cpu, main, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for shard, shard_keys, shard_values in writes:
        db, handle = databases[shard]
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.set_default_column_family(handle)
        collections.deque(map(batch.put, shard_keys, shard_values), maxlen=0)
        db.write(batch)
    wall, cpu, main = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - main
    for db, handle in databases:
        del handle
        db.close()
    return Measured(keys / wall, 1e6 * cpu / keys, 1e6 * main / keys)


def render(results: dict[str, list[Measured]], command: str, keys: int, rounds: int) -> str:
    lines = [
        "# RocksDB's own CPU per put key in the node's layout, by option",
        "",
        f"Written by `benchmarks/bench_rocks_options.py` on {datetime.date.today()}. Reproduce with:",
        "",
        f"```\n{command}\n```",
        "",
        f"{keys:,} keys of 16 random bytes, values of 100 bytes; {SHARDS} databases with the state in a column "
        f"family, stored keys and values, {KEYS_PER_WRITE} keys of one shard per `db.write`; {rounds} rounds, "
        "variations in turn, medians. CPU: the whole process up to the last write (RocksDB's flushes "
        "that finished by then included); main thread: the writing thread alone.",
        "",
        "| variation | keys/s | CPU µs/key | main thread µs/key | rounds (CPU µs/key) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, runs in results.items():
        lines.append(f"| {name} | {statistics.median(r.keys_per_second for r in runs) / 1e3:,.0f}k "
                     f"| {statistics.median(r.cpu_us_per_key for r in runs):.2f} "
                     f"| {statistics.median(r.main_thread_us_per_key for r in runs):.2f} "
                     f"| {', '.join(f'{r.cpu_us_per_key:.2f}' for r in runs)} |")
    lines += ["", "## Setup", "",
              f"- CPU {cpu_model()}; Python {sys.version.split()[0]}; rocksdict {version('rocksdict')}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "benchmarks/bench_rocks_options.py", *(argv if argv is not None else sys.argv[1:])])
    rng = random.Random(options.seed)
    keys = [rng.randbytes(16) for _ in range(options.keys)]
    values = [rng.randbytes(100) for _ in range(options.keys)]
    writes = shard_writes(keys, values)
    results: dict[str, list[Measured]] = {variant.name: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-rocks-options-") as tmp:
        for round_number in range(options.rounds):
            for index, variant in enumerate(VARIANTS):
                root = Path(tmp) / f"round-{round_number}-{index}"
                measured = run(variant, writes, options.keys, root)
                shutil.rmtree(root, ignore_errors=True)
                results[variant.name].append(measured)
                log(f"round {round_number + 1}: {variant.name}: {measured.keys_per_second / 1e3:,.0f}k/s, "
                    f"{measured.cpu_us_per_key:.2f} µs/key")
    write_report(render(results, command, options.keys, options.rounds), options.output, write=not options.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

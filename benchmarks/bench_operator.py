#!/usr/bin/env python
"""An operator-like mix: the asyncio client against the sync client, in one run.

    .venv/bin/python benchmarks/bench_operator.py            # writes benchmarks/results/operator_mix.md
    .venv/bin/python benchmarks/bench_operator.py --quick    # a smoke run

Every event does what a keyed operator does: one get and one merge (``sum_int64``) of a random key
out of ``--keys``, over four shards (key-group ranges) on one node process on loopback. The sync
client processes events one after the other (a get is a round trip; merges are buffered). The
asyncio client runs ``--concurrency`` coroutines, each taking events from the same stream, whose
gets and merges are coalesced into batches per shard. A round measures both on fresh namespaces;
figures are medians over rounds and the ratio is taken per round.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from stateserver.client import StateClient  # noqa: E402
from stateserver.client.aio import AsyncStateClient  # noqa: E402
from support.node import run_node  # noqa: E402

SHARDS = ["0-31", "32-63", "64-95", "96-127"]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "operator_mix.md"


def sync_mix(address: str, namespace: str, keys: list[str]) -> float:
    """Events per second of the sync client doing one get and one merge per event."""
    with StateClient(address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups=SHARDS, epoch=1)
        counts = writer.aggregating_state("counts", merge_operator="sum_int64")
        started = time.perf_counter()
        for key in keys:
            counts.get(key)
            counts.merge(key, 1)
        writer.flush()
        elapsed = time.perf_counter() - started
        assert sum(v or 0 for v in counts.get_many(sorted(set(keys)))) == len(keys)
    return len(keys) / elapsed


async def async_mix(address: str, namespace: str, keys: list[str], concurrency: int) -> float:
    """Events per second of the asyncio client, ``concurrency`` coroutines sharing the events."""
    async with AsyncStateClient(address) as client:
        await client.create_namespace(namespace, max_key_groups=128)
        writer = await client.open_writer(namespace, key_groups=SHARDS, epoch=1)
        counts = await writer.aggregating_state("counts", merge_operator="sum_int64")
        events = iter(keys)

        async def operator() -> None:
            for key in events:
                await counts.get(key)
                await counts.merge(key, 1)

        started = time.perf_counter()
        await asyncio.gather(*(operator() for _ in range(concurrency)))
        await writer.flush()
        elapsed = time.perf_counter() - started
        assert sum(v or 0 for v in await counts.get_many(sorted(set(keys)))) == len(keys)
        await writer.close()
    return len(keys) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds, no results file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sync-events", type=int, default=8_000)
    parser.add_argument("--async-events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.sync_events, args.async_events = 1, 1_000, 10_000
    rng = random.Random(1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch, run_node(Path(scratch) / "data") as node:
        for round_number in range(args.rounds):
            sync_keys = [f"key{rng.randrange(args.keys)}" for _ in range(args.sync_events)]
            async_keys = [f"key{rng.randrange(args.keys)}" for _ in range(args.async_events)]
            sync_rate = sync_mix(node.address, f"bench-sync-{round_number}", sync_keys)
            async_rate = asyncio.run(async_mix(node.address, f"bench-async-{round_number}", async_keys,
                                               args.concurrency))
            rows.append((sync_rate, async_rate, async_rate / sync_rate))
            print(f"round {round_number + 1}: sync {sync_rate:,.0f} events/s, asyncio {async_rate:,.0f} events/s, "
                  f"ratio {async_rate / sync_rate:.1f}x", flush=True)
    sync_median, async_median, ratio_median = (statistics.median(column) for column in zip(*rows))
    command = "python benchmarks/bench_operator.py" + (" --quick" if args.quick else "")
    report = f"""# Operator mix: asyncio client against sync client

One get and one merge (`sum_int64`) per event, random keys out of {args.keys:,}, four shards on one
node process on loopback; {args.rounds} rounds, medians (the ratio is taken per round).

Command: `{command}` (sync {args.sync_events:,} events, asyncio {args.async_events:,} events with
{args.concurrency} coroutines per round). Measured {datetime.date.today()} on {platform.machine()},
{os.cpu_count()} CPUs, Python {platform.python_version()}.

| client | events/s | gets + merges/s |
| --- | ---: | ---: |
| sync `StateClient` (one event after the other) | {sync_median:,.0f} | {2 * sync_median:,.0f} |
| asyncio `AsyncStateClient` ({args.concurrency} coroutines, coalesced) | {async_median:,.0f} | {2 * async_median:,.0f} |
| ratio asyncio / sync | {ratio_median:.1f}x | |

What it says: the sync client pays a round trip per get (reads must see the buffered merges, which
the overlay answers, but the node's value still has to come back); the asyncio client turns the
gets of many coroutines into one ReadBatch per shard and their merges into sequenced write
batches, so its cost per event is the Python work of a coroutine, a future and the batching.
Not measured here: a sync operator that batches its own events (``get_many`` over a micro-batch)
would close much of the gap, at the price of restructuring the operator around batches.
"""
    print(report)
    if not args.quick:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

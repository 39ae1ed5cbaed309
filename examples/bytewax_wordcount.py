#!/usr/bin/env python
"""A Bytewax dataflow whose keyed state lives in a stateserver node: a running word count and a
windowed sum per word, exactly once across a crash.

    stateserver serve --port 7700 --data-dir /tmp/stateserver &
    python examples/bytewax_wordcount.py --address 127.0.0.1:7700

Each event is ``(word, (timestamp, amount))``. For every event the step emits ``(word, (count,
window, window_sum))``: how often the word was seen so far, the event's 10-second tumbling window,
and the sum of the word's amounts in that window so far. Both live in stateserver aggregating state.

The demo runs the dataflow three times: once without a crash (the reference), then in another
namespace with an abort in the middle of the source (Bytewax's ``TestingSource.ABORT``), then
resumed from Bytewax's recovery database, which holds the source offset and the stateserver
checkpoint id of the same epoch. The resumed run ends with exactly the reference's state, and the
outputs it emits are exactly the reference's from the replay point on.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bytewax import operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.recovery import RecoveryConfig, init_db_dir  # noqa: E402
from bytewax.testing import TestingSink, TestingSource, run_main  # noqa: E402

from stateserver.client import StateClient, Writer  # noqa: E402
from stateserver.client.bytewax import StateServerBackend, stateful_flat_map  # noqa: E402

WINDOW_SECONDS = 10
Event = tuple[str, tuple[int, int]]


def make_events(count: int, *, words: int = 40, seed: int = 3) -> list[Event]:
    rng = random.Random(seed)
    return [(f"word{rng.randrange(words)}", (i // 7, rng.randrange(1, 100))) for i in range(count)]


def declare(writer: Writer) -> tuple[Any, Any]:
    return (writer.aggregating_state("counts", merge_operator="sum_int64"),
            writer.aggregating_state("window_sums", merge_operator="sum_int64"))


def count_and_sum(states: tuple[Any, Any], word: str, event: tuple[int, int]) -> list[tuple[int, int, int]]:
    counts, window_sums = states
    timestamp, amount = event
    window = timestamp // WINDOW_SECONDS
    counts.merge(word, 1)
    window_sums.merge(f"{word}@{window}", amount)
    return [(counts.get(word), window, window_sums.get(f"{word}@{window}"))]


def build_flow(source: TestingSource, backend: StateServerBackend[Any], out: list[Any],
               mapper: Callable[..., list[Any]] = count_and_sum) -> Dataflow:
    flow = Dataflow("wordcount")
    events = op.input("events", flow, source)
    keyed = op.key_on("by_word", events, lambda event: event[0])
    values = op.map_value("payload", keyed, lambda event: event[1])
    counted = stateful_flat_map("count", values, backend, mapper)
    op.output("out", counted, TestingSink(out))
    return flow


def run(address: str, namespace: str, source: TestingSource, *, epoch: int | None, recovery_dir: Path,
        out: list[Any], batch_ops: int = 1000, mapper: Callable[..., list[Any]] = count_and_sum,
        ) -> StateServerBackend[Any]:
    """One execution (attempt ``epoch``) of the dataflow, resuming from ``recovery_dir`` if it holds
    snapshots; an ABORT in the source ends it early. Returns the step's backend (closed)."""
    backend = StateServerBackend(address, namespace, epoch=epoch, declare=declare, shards=4,
                                 client=StateClient(address, batch_ops=batch_ops))
    try:
        run_main(build_flow(source, backend, out, mapper), epoch_interval=timedelta(0),
                 recovery_config=RecoveryConfig(str(recovery_dir)))
    finally:
        backend.close()
    return backend


def stored_state(address: str, namespace: str, events: Sequence[Event], *, epoch: int) -> dict[str, int | None]:
    """Counts and window sums of the latest committed checkpoint, read by a writer at ``epoch``."""
    keys = sorted({word for word, _ in events})
    windows = sorted({f"{word}@{ts // WINDOW_SECONDS}" for word, (ts, _) in events})
    with StateClient(address) as client:
        writer = client.open_writer(namespace, key_groups="0-127", epoch=epoch, restore="latest")
        counts, window_sums = declare(writer)
        state = dict(zip(keys, counts.get_many(keys)))
        state.update(zip(windows, window_sums.get_many(windows)))
    return state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:7700")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100, help="source items per Bytewax epoch")
    args = parser.parse_args(argv)
    events = make_events(args.events)
    stamp = int(time.time())
    with tempfile.TemporaryDirectory() as scratch:
        reference_dir, crash_dir = Path(scratch) / "reference", Path(scratch) / "crash"
        for directory in (reference_dir, crash_dir):
            directory.mkdir()
            init_db_dir(directory, 1)
        expected: list[Any] = []
        run(args.address, f"wordcount-{stamp}-reference", TestingSource(events, args.batch), epoch=1,
            recovery_dir=reference_dir, out=expected)

        crash_at = len(events) * 3 // 5 + args.batch // 2
        source = TestingSource([*events[:crash_at], TestingSource.ABORT(), *events[crash_at:]], args.batch)
        before_crash: list[Any] = []
        run(args.address, f"wordcount-{stamp}-crash", source, epoch=1, recovery_dir=crash_dir, out=before_crash)
        print(f"attempt 1 aborted after {len(before_crash)} of {len(expected)} outputs")
        after_crash: list[Any] = []
        resumed = run(args.address, f"wordcount-{stamp}-crash", source, epoch=2, recovery_dir=crash_dir,
                      out=after_crash)
    same_outputs = after_crash == expected[len(expected) - len(after_crash):]
    same_state = (stored_state(args.address, f"wordcount-{stamp}-crash", events, epoch=3)
                  == stored_state(args.address, f"wordcount-{stamp}-reference", events, epoch=2))
    print(f"attempt 2 restored checkpoint {resumed.restored_from} and emitted {len(after_crash)} outputs; "
          f"they are the reference's last ones: {same_outputs}; the final state is the reference's: {same_state}")
    return 0 if same_outputs and same_state else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""A stream job that recovers by itself: keyed counts, exactly once across node failures.

    stateserver serve --port 7700 --data-dir /tmp/stateserver &       # or a cluster, see deploy/
    python examples/recovering_job.py --address 127.0.0.1:7700 [--address ...]

The job never picks an epoch nor stores its source offset in keyed state: ``recover`` allocates
the next epoch, reopens every subtask's shards from the latest committed checkpoint on the nodes
that own them now (state handles stay valid) and returns the metadata committed with that
checkpoint, here the source offset. On any ``StateServerError`` the loop calls it again and
replays the source from that offset. ``before_event`` lets a test kill a node mid-job.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stateserver.client import (  # noqa: E402
    CheckpointCoordinator,
    KeyedStateBackend,
    StateClient,
    StateServerError,
    key_group_for,
    ranges_for_parallelism,
)


def run_job(client: StateClient, namespace: str, events: Sequence[str], *, parallelism: int = 3,
            checkpoint_every: int = 500, before_event: Callable[[int], None] = lambda offset: None,
            on_failure: Callable[[StateServerError], None] = lambda error: None) -> dict[str, int]:
    """Count ``events`` per word; returns the final counts."""
    max_key_groups = client.max_key_groups(namespace)
    ranges = ranges_for_parallelism(max_key_groups, parallelism)
    subtask_of = {g: i for i, r in enumerate(ranges) for g in range(r.start, r.end + 1)}
    coordinator = CheckpointCoordinator(client, namespace)
    subtasks = [KeyedStateBackend(client, namespace, key_groups=r) for r in ranges]
    counts: list[Any] = []
    # -- the job loop ----------------------------------------------------------------------
    offset: int | None = None  # None: (re)start from the latest checkpoint
    while offset is None or offset < len(events):
        try:
            if offset is None:
                recovery = coordinator.recover(subtasks)  # next epoch, latest checkpoint, same handles
                offset = int(recovery.metadata or b"0")  # the source offset committed with it
                counts = counts or [s.writer.aggregating_state("counts", merge_operator="sum_int64")
                                    for s in subtasks]
            before_event(offset)
            word = events[offset]
            counts[subtask_of[key_group_for(word.encode(), max_key_groups)]].merge(word, 1)
            offset += 1
            if offset % checkpoint_every == 0 or offset == len(events):
                coordinator.checkpoint(subtasks, metadata=str(offset).encode())
        except StateServerError as error:
            on_failure(error)
            offset = None  # recover on the next turn
    # -- the end ----------------------------------------------------------------------------
    words = sorted(set(events))
    final: dict[str, int] = {}
    for index, handle in enumerate(counts):
        mine = [w for w in words if subtask_of[key_group_for(w.encode(), max_key_groups)] == index]
        final.update(zip(mine, handle.get_many(mine)))
    return final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", action="append", help="a node's address (repeatable; default 127.0.0.1:7700)")
    parser.add_argument("--namespace", default=f"recovering-job-{int(time.time())}")
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    events = [f"word{rng.randrange(200)}" for _ in range(args.events)]
    with StateClient(args.address or ["127.0.0.1:7700"]) as client:
        client.create_namespace(args.namespace, max_key_groups=128)
        counts = run_job(client, args.namespace, events, on_failure=lambda e: print(f"recovering after: {e}"))
    exact = counts == {w: events.count(w) for w in set(events)}
    print(f"{len(counts)} words, {sum(counts.values())} events counted; exact: {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""A plain Python operator loop on the checkpoint hooks: keyed counts, exactly once across a crash.

    stateserver serve --port 7700 --data-dir /tmp/stateserver &
    python examples/operator_loop.py --address 127.0.0.1:7700

The source is a replayable sequence of events (as a Kafka partition is). The operator keeps its
counts and its source offset in stateserver, so one checkpoint holds both: restoring it gives the
state and the offset to replay from. The demo runs attempt 1 until it "crashes" between two
checkpoints (its writers are dropped with writes past the checkpoint already on the node), then
attempt 2 restores the latest checkpoint, replays the source from its offset, and finishes with
exactly the counts of a run without a crash.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stateserver.client import (  # noqa: E402
    INT64,
    CheckpointCoordinator,
    KeyedStateBackend,
    StateClient,
    key_group_for,
    ranges_for_parallelism,
)
from stateserver.client.checkpointing import Restore  # noqa: E402

OFFSET_KEY = "source-offset"


class Crash(Exception):
    """The operator process died (simulated): nothing after the last checkpoint survives it."""


def run_operator(client: StateClient, namespace: str, events: Sequence[str], *, epoch: int, restore: Restore,
                 checkpoint_every: int, parallelism: int = 2, crash_after: int | None = None) -> dict[str, int]:
    """Count ``events`` per word from the restored offset on; returns the final counts.

    ``epoch`` is the attempt number (higher on every restart). With ``crash_after`` the loop
    raises ``Crash`` once that many events are processed, leaving its writers as they are.
    """
    max_key_groups = client.max_key_groups(namespace)
    coordinator = CheckpointCoordinator(client, namespace, epoch=epoch)
    subtasks = [KeyedStateBackend(client, namespace, key_groups=key_groups, epoch=epoch)
                for key_groups in ranges_for_parallelism(max_key_groups, parallelism)]
    coordinator.initialize(subtasks, restore=restore)
    owner = {key_group: subtask for subtask in subtasks
             for key_groups in subtask.key_groups for key_group in range(key_groups.start, key_groups.end + 1)}

    def subtask_for(key: str) -> KeyedStateBackend:
        return owner[key_group_for(key.encode(), max_key_groups)]

    counts = {id(s): s.writer.aggregating_state("counts", merge_operator="sum_int64") for s in subtasks}
    offsets = subtask_for(OFFSET_KEY).writer.value_state("source", value_serializer=INT64)
    start = offsets.get(OFFSET_KEY, 0) or 0
    for position in range(start, len(events)):
        word = events[position]
        counts[id(subtask_for(word))].merge(word, 1)
        processed = position + 1
        if crash_after is not None and processed >= crash_after:
            raise Crash(f"attempt {epoch} crashed after event {processed}")
        if processed % checkpoint_every == 0 or processed == len(events):
            offsets.put(OFFSET_KEY, processed)  # the offset goes into the same checkpoint as the counts
            coordinator.checkpoint(subtasks)
    words = sorted(set(events))
    final: dict[str, int] = {}
    for subtask in subtasks:
        mine = [word for word in words if subtask_for(word) is subtask]
        final.update(zip(mine, counts[id(subtask)].get_many(mine)))
    return final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:7700")
    parser.add_argument("--namespace", default=f"operator-loop-{int(time.time())}")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--crash-after", type=int, default=3217)
    args = parser.parse_args(argv)

    rng = random.Random(7)
    events = [f"word{rng.randrange(200)}" for _ in range(args.events)]
    with StateClient(args.address) as client:
        client.create_namespace(args.namespace, max_key_groups=128)
        try:
            run_operator(client, args.namespace, events, epoch=1, restore=None,
                         checkpoint_every=args.checkpoint_every, crash_after=args.crash_after)
        except Crash as crash:
            print(f"{crash}; restoring the latest checkpoint")
        counts = run_operator(client, args.namespace, events, epoch=2, restore="latest",
                              checkpoint_every=args.checkpoint_every)
    expected = Counter(events)
    exact = counts == dict(expected)
    print(f"{len(counts)} words, {sum(counts.values())} events counted; same as a run without a crash: {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())

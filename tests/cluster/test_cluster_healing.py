"""A restarted node is used again without a manual refresh (issue 12, point 4), on three real
node processes: the job of examples/recovering_job.py loses node X (SIGKILL) and recovers; X is
restarted on its old data directory and the client routes to it again within 2 s of it serving;
then node Y is killed, and the recovery puts X's shards back on X. Counts are exact and the client
raised nothing but StateServerError.

Fails on the code before the change: X stayed marked unavailable for good, so ``node_for`` never
returned it again and the second recovery put X's shards on the last node left.
"""
from __future__ import annotations

import random
import time
from types import ModuleType

import pytest

from stateserver.client import StateClient, StateServerError, ranges_for_parallelism
from stateserver.protocol import placement
from support.cluster import Cluster, expected_counts

NAMESPACE = "healing"
EVENTS = 9_000
CHECKPOINT_EVERY = 1_000
PARALLELISM = 8
KILL_X_AT, RESTART_X_AT, KILL_Y_AT = 2_500, 4_200, 6_500

pytestmark = pytest.mark.timeout(240)


def test_a_restarted_node_is_used_again_within_two_seconds_and_takes_its_shards_back(
        cluster: Cluster, example: ModuleType) -> None:
    generator = random.Random(4)
    events = [f"key-{generator.randrange(300)}" for _ in range(EVENTS)]
    ranges = ranges_for_parallelism(128, PARALLELISM)
    shard_ids = [f"{NAMESPACE}/{r}" for r in ranges]
    owners = {shard: placement.owner(shard, cluster.members) for shard in shard_ids}  # members: workers
    x = cluster.busiest_node(NAMESPACE, ranges)
    # Y too must own shards, or its loss interrupts nothing: the busier of the other two.
    y = max((a for a in cluster.addresses if a != x), key=lambda a: sum(cluster.shard_node(NAMESPACE, r) == a
                                                                        for r in ranges))
    x_shards = [shard for shard, owner in owners.items() if owner in cluster.workers_of(x)]
    assert x_shards, "X owns shards of the job"
    failures: list[StateServerError] = []
    healed_after: list[float] = []

    done: set[str] = set()  # the source replays after a recovery: each fault happens once

    with StateClient(cluster.addresses, timeout=20, batch_ops=100) as state:
        state.create_namespace(NAMESPACE, max_key_groups=128)

        def faults(offset: int) -> None:
            if offset == KILL_X_AT and "kill x" not in done:
                done.add("kill x")
                cluster.kill(x)
            elif offset == RESTART_X_AT and "kill x" in done and not healed_after:
                assert set(cluster.workers_of(x)) & set(state.unavailable), "the recovery found X down"
                cluster.start(x)  # on its old data directory; returns once it reports SERVING
                serving = time.monotonic()
                while state.node_for(x_shards[0]) != owners[x_shards[0]]:
                    assert time.monotonic() - serving < 10, "X is never used again"
                    time.sleep(0.02)
                healed_after.append(time.monotonic() - serving)
            elif offset == KILL_Y_AT and healed_after and "kill y" not in done:
                done.add("kill y")
                cluster.kill(y)

        counts = example.run_job(state, NAMESPACE, events, parallelism=PARALLELISM,
                                 checkpoint_every=CHECKPOINT_EVERY, before_event=faults, on_failure=failures.append)

        assert counts == expected_counts(events), "nothing lost or counted twice"
        assert len(failures) >= 2 and all(isinstance(f, StateServerError) for f in failures)
        assert healed_after and healed_after[0] <= 2.0, f"X used again {healed_after} s after serving"
        # The recovery after Y's loss put every shard on its first live node: X's own back on X.
        on_x = cluster.open_shards(x)
        expected_on_x = {s for s in shard_ids if [n for n in placement.placement_order(s, cluster.members)
                                                   if n not in cluster.workers_of(y)][0] in cluster.workers_of(x)}
        assert expected_on_x >= set(x_shards) and on_x == expected_on_x

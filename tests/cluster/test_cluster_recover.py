"""One call to recover (issue 12, point 3) on three real node processes: SIGKILL a node mid-job,
the job loop of examples/recovering_job.py calls ``CheckpointCoordinator.recover`` and ends with
exact counts, with no epoch chosen by the job and the source offset taken from the checkpoint's
metadata.

Fails on the code before the change: there was no ``recover``, no epoch allocation and no
checkpoint metadata (the example cannot even construct a coordinator without an epoch).
"""
from __future__ import annotations

import random
from types import ModuleType

import pytest

from stateserver.client import StateClient, StateServerError, ranges_for_parallelism
from stateserver.store import paths
from stateserver.ownership.epoch_allocation import highest_allocated
from stateserver.store import open_store
from support.cluster import Cluster, expected_counts

NAMESPACE = "recovering"
EVENTS = 12_000
CHECKPOINT_EVERY = 1_500
KILL_AT = 7_000  # between two checkpoints, with writes of the next one already on the nodes

pytestmark = pytest.mark.timeout(240)


def test_sigkill_of_one_node_of_three_recovers_with_one_call_and_exact_counts(
        cluster: Cluster, example: ModuleType) -> None:
    generator = random.Random(12)
    events = [f"key-{generator.randrange(400)}" for _ in range(EVENTS)]
    failures: list[StateServerError] = []
    victim: list[str] = []
    # The node holding the most of the job's shards: on random ports a given node may hold none.
    busiest = cluster.busiest_node(NAMESPACE, ranges_for_parallelism(128, 8))
    # Small batches: writes made after the last checkpoint reach the nodes before the kill, so a
    # recovery that kept them (or rewound the source too little or too far) would miscount.
    with StateClient(cluster.addresses, timeout=20, batch_ops=100) as state:
        state.create_namespace(NAMESPACE, max_key_groups=128)

        def kill_once(offset: int) -> None:
            if offset == KILL_AT and not victim:
                victim.append(busiest)
                cluster.kill(victim[0])

        counts = example.run_job(state, NAMESPACE, events, parallelism=8, checkpoint_every=CHECKPOINT_EVERY,
                                 before_event=kill_once, on_failure=failures.append)

        assert victim and failures, "the kill interrupted the job and it recovered"
        hosted = {cluster.shard_node(NAMESPACE, r) for r in ranges_for_parallelism(128, 8)}
        assert victim[0] in hosted, "the killed node held shards of the job"
        assert all(isinstance(f, StateServerError) for f in failures)
        assert counts == expected_counts(events)
        latest = state.checkpoint_metadata(NAMESPACE)
        assert latest.metadata == str(EVENTS).encode()
    store = open_store(cluster.snapshot_url)
    # Every attempt's epoch was allocated in the store: the first start and each recovery.
    allocated = [paths.parse_allocated_epoch(m.key) for m in store.list(paths.epochs_prefix(NAMESPACE))]
    assert sorted(allocated) == list(range(1, len(failures) + 2))
    assert highest_allocated(store, NAMESPACE) == len(failures) + 1
    # the last checkpoint was taken by the last attempt, at ids above every earlier attempt's
    assert latest.checkpoint_id >> 32 == len(failures) + 1

"""Failover time (issue 12, point 7) on three real node processes: after a SIGKILL, the nodes that
take over restore the shards in parallel, and the counts stay exact.

The job of examples/recovering_job.py runs 24 subtasks of one shard each; one node is killed
between two checkpoints and ``CheckpointCoordinator.recover`` brings the job back. Every surviving
node then restores its shards of the checkpoint (the lost node's by download, its own from its
local copies), and its ``stateserver_restores_in_flight_peak`` must show more than one restore at
once: a count of overlapping restores, not a timing. The job writes in batches of one, so that no
survivor's shard is still exactly the checkpoint (such a shard is kept in place, not restored:
tests/cluster/test_cluster_failover_in_place.py).

Fails on the code before the change: ``recover`` rebound one subtask after the other, so each
node restored one shard at a time (and had no such metric).
"""
from __future__ import annotations

import random
from types import ModuleType

import pytest

from stateserver.client import StateClient, StateServerError, ranges_for_parallelism
from support.cluster import Cluster, expected_counts
from support.metrics import highest, scrape

NAMESPACE = "parallel-restore"
PARALLELISM = 24
EVENTS = 6_000
CHECKPOINT_EVERY = 1_000
KILL_AT = 3_500  # between two checkpoints, with writes of the next one already on the nodes

pytestmark = pytest.mark.timeout(240)


def restores_peak(metrics_port: int) -> float:
    """The most restores in flight at once on any of the node's workers."""
    return highest(scrape(metrics_port), "stateserver_restores_in_flight_peak")


def test_a_sigkilled_nodes_shards_restore_in_parallel_on_the_takers_and_counts_stay_exact(
        metered_cluster: tuple[Cluster, dict[str, int]], example: ModuleType) -> None:
    cluster, metrics_ports = metered_cluster
    generator = random.Random(5)
    events = [f"key-{generator.randrange(300)}" for _ in range(EVENTS)]
    # The node holding the most shards: on random ports a given node may hold few or none.
    victim = cluster.busiest_node(NAMESPACE, ranges_for_parallelism(128, PARALLELISM))
    failures: list[StateServerError] = []
    killed: list[bool] = []

    def kill_once(offset: int) -> None:
        if offset == KILL_AT and not killed:
            killed.append(True)
            assert all(restores_peak(port) == 0 for port in metrics_ports.values()), "nothing restored yet"
            cluster.kill(victim)

    # Batches of one: every shard has writes on its node past the checkpoint when the node dies, so
    # no survivor's shard is still exactly the checkpoint (those are kept in place, not restored).
    with StateClient(cluster.addresses, timeout=20, batch_ops=1) as state:
        state.create_namespace(NAMESPACE, max_key_groups=128)
        counts = example.run_job(state, NAMESPACE, events, parallelism=PARALLELISM,
                                 checkpoint_every=CHECKPOINT_EVERY, before_event=kill_once,
                                 on_failure=failures.append)

    assert killed and failures, "the kill interrupted the job and it recovered"
    assert all(isinstance(f, StateServerError) for f in failures)
    lost = [r for r in ranges_for_parallelism(128, PARALLELISM) if cluster.shard_node(NAMESPACE, r) == victim]
    assert len(lost) >= 2, "the killed node held several shards of the job"
    assert counts == expected_counts(events)
    for address in (a for a in cluster.addresses if a != victim):
        assert restores_peak(metrics_ports[address]) > 1, f"node {address} restored one shard at a time"

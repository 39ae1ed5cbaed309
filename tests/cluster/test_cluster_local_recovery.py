"""Local recovery (issue 12, point 7) on three real node processes: after a SIGKILL and
``CheckpointCoordinator.recover``, the surviving nodes rebuild their own shards from the copy of
the last confirmed checkpoint they kept (hard links), and download only the lost node's shards;
a kept copy that differs from the committed manifest in any file is never used.

Observable through each node's ``stateserver_restores_total{source=...}`` and
``stateserver_local_copies_rejected_total``: counts of restores, not timings. A survivor's shard
that is still exactly the checkpoint (none of its writes since reached the node) is kept open as
it is (``source="in_place"``, tests/cluster/test_cluster_failover_in_place.py) instead.

Fails on the code before the change: every shard of the recover was downloaded (the nodes kept no
copy, and exported no such figures).
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from stateserver.client import StateClient, StateServerError, ranges_for_parallelism
from stateserver.protocol import placement
from support.cluster import Cluster, expected_counts
from support.metrics import highest, scrape, total
from support.node import worker_data_dirs

NAMESPACE_PREFIX = "local-recovery"
MAX_KEY_GROUPS = 128
PARALLELISM = 12
EVENTS = 4_000
CHECKPOINT_EVERY = 1_000
KILL_AT = 2_500  # between two checkpoints, with writes of the next one already on the nodes

pytestmark = pytest.mark.timeout(240)


def figures(metrics_port: int) -> dict[str, float]:
    """The node's restore figures, added up over its workers (the peak: the highest of any)."""
    samples = scrape(metrics_port)
    return {"local": total(samples, "stateserver_restores_total", source="local"),
            "in_place": total(samples, "stateserver_restores_total", source="in_place"),
            "download": total(samples, "stateserver_restores_total", source="download"),
            "rejected": total(samples, "stateserver_local_copies_rejected_total"),
            "peak": highest(samples, "stateserver_restores_in_flight_peak")}


def retained_copies(cluster: Cluster, address: str) -> list[Path]:
    """The kept copies of node ``address``, on all its workers."""
    return sorted(copy for directory in worker_data_dirs(cluster.data_dir(address))
                  if (directory / "checkpoints" / ".retained").is_dir()
                  for copy in (directory / "checkpoints" / ".retained").iterdir() if not copy.name.startswith("."))


def run_with_a_kill(cluster: Cluster, example: ModuleType, namespace: str, victim: str,
                    after_kill: Callable[[], None] = lambda: None,
                    batch_ops: int = 100) -> tuple[dict[str, int], list[StateServerError]]:
    generator = random.Random(11)
    events = [f"key-{generator.randrange(300)}" for _ in range(EVENTS)]
    failures: list[StateServerError] = []
    killed: list[bool] = []

    def kill_once(offset: int) -> None:
        if offset == KILL_AT and not killed:
            killed.append(True)
            cluster.kill(victim)
            after_kill()

    with StateClient(cluster.addresses, timeout=20, batch_ops=batch_ops) as state:
        state.create_namespace(namespace, max_key_groups=MAX_KEY_GROUPS)
        counts = example.run_job(state, namespace, events, parallelism=PARALLELISM,
                                 checkpoint_every=CHECKPOINT_EVERY, before_event=kill_once,
                                 on_failure=failures.append)
    assert killed and failures, "the kill interrupted the job and it recovered"
    assert all(isinstance(f, StateServerError) for f in failures)
    assert counts == expected_counts(events)
    return counts, failures


def shards_by_node(cluster: Cluster, namespace: str) -> dict[str, int]:
    owners = [cluster.node_of(placement.owner(f"{namespace}/{r}", cluster.members))
              for r in ranges_for_parallelism(MAX_KEY_GROUPS, PARALLELISM)]
    return {address: owners.count(address) for address in cluster.addresses}


def spread_namespace(cluster: Cluster) -> tuple[str, dict[str, int]]:
    """A namespace whose shards land on every node, two or more on one: placement hashes the
    nodes' ports, which the tests pick at random, so a fixed name could leave a node without any."""
    for index in range(100):
        namespace = f"{NAMESPACE_PREFIX}-{index}"
        owned = shards_by_node(cluster, namespace)
        if min(owned.values()) >= 1 and max(owned.values()) >= 2:
            return namespace, owned
    raise AssertionError("no namespace spreads over every node")


def test_survivors_restore_their_own_shards_from_local_copies_and_download_only_the_lost_ones(
        metered_cluster: tuple[Cluster, dict[str, int]], example: ModuleType) -> None:
    cluster, metrics_ports = metered_cluster
    namespace, owned = spread_namespace(cluster)
    victim = max(owned, key=lambda address: owned[address])  # the node with the most shards
    assert owned[victim] >= 2
    _, failures = run_with_a_kill(cluster, example, namespace, victim)
    assert len(failures) == 1, f"one failure, one recover: {failures}"
    survivors = [a for a in cluster.addresses if a != victim]
    found = {address: figures(metrics_ports[address]) for address in survivors}
    rebuilt = {a: found[a]["local"] + found[a]["in_place"] for a in survivors}  # never downloaded
    assert sum(rebuilt.values()) == sum(owned[a] for a in survivors), found
    assert all(rebuilt[a] == owned[a] for a in survivors), (owned, found)
    assert sum(found[a]["download"] for a in survivors) == owned[victim], (owned, found)
    assert all(found[a]["rejected"] == 0 for a in survivors)


def test_a_damaged_or_incomplete_local_copy_is_not_used_and_the_restore_downloads_instead(
        metered_cluster: tuple[Cluster, dict[str, int]], example: ModuleType) -> None:
    """One survivor's kept copy loses a file, another's has a file with the same size and other
    bytes (written beside it and renamed over it, so the live shard's linked file is untouched):
    both are refused, those two shards download, and the counts stay exact."""
    cluster, metrics_ports = metered_cluster
    namespace, owned = spread_namespace(cluster)
    victim = max(owned, key=lambda address: owned[address])
    first, second = [a for a in cluster.addresses if a != victim]
    assert owned[first] >= 1 and owned[second] >= 1

    def damage() -> None:
        missing = retained_copies(cluster, first)[0]
        (max(missing.iterdir(), key=lambda p: p.stat().st_size)).unlink()
        corrupt = retained_copies(cluster, second)[0]
        target = max(corrupt.iterdir(), key=lambda p: p.stat().st_size)
        forged = target.with_name(target.name + ".forged")
        forged.write_bytes(os.urandom(target.stat().st_size))
        forged.replace(target)

    # Batches of one: every shard has writes on its node past the checkpoint, so every survivor's
    # shard is rebuilt from its copy (none is still exactly the checkpoint, to be kept in place).
    _, failures = run_with_a_kill(cluster, example, namespace, victim, after_kill=damage, batch_ops=1)
    assert len(failures) == 1, f"one failure, one recover: {failures}"
    found = {address: figures(metrics_ports[address]) for address in (first, second)}
    for address in (first, second):
        assert found[address]["rejected"] == 1, found
        assert found[address]["local"] == owned[address] - 1, (owned, found)
    assert sum(found[a]["download"] for a in (first, second)) == owned[victim] + 2, (owned, found)

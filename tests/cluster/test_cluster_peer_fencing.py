"""A rescaled writer's old shards on other nodes are fenced and closed, not left open for ever.

When a job rescales, placement may open its new shards on other nodes than the old ones. The old
code fenced the old writer there only when it tried to commit: its old shards stayed open (taking
its writes, holding their memtables and cache) until something opened overlapping key groups on
that node or it restarted. Now every open tells the other members in the background; this test
picks a namespace where no new shard lands on the old shard's node (checked, not assumed), so it
fails on that code (the old shard is still open there, and the old writer's flush succeeds).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stateserver.client import INT64, FencedError, StateClient
from support.checkpoints import commit
from support.cluster import Cluster, run_cluster
from support.node import unique_namespace
from support.waiting import wait_until

OLD, NEW = ["0-127"], ["0-63", "64-127"]
NOTICE_WAIT_S = 20.0


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[Cluster]:
    with run_cluster(tmp_path / "nodes", (tmp_path / "store").as_uri(), size=2) as cluster:
        yield cluster


def test_a_rescale_onto_other_nodes_fences_and_closes_the_old_shards(two_nodes: Cluster) -> None:
    cluster = two_nodes
    namespace = next(name for name in iter(lambda: unique_namespace("moved"), None)
                     if cluster.shard_node(name, OLD[0]) not in {cluster.shard_node(name, r) for r in NEW})
    old_node = cluster.shard_node(namespace, OLD[0])
    with StateClient(cluster.addresses, timeout=20) as client:
        client.create_namespace(namespace, max_key_groups=128)
        old = client.open_writer(namespace, key_groups=OLD, epoch=1)
        values = old.value_state("v", value_serializer=INT64)
        values.put("k", 1)
        commit(client, old, 1)
        assert f"{namespace}/0-127" in cluster.open_shards(old_node)

        new = client.open_writer(namespace, key_groups=NEW, epoch=2, restore="latest")
        wait_until(lambda: f"{namespace}/0-127" not in cluster.open_shards(old_node),  # told in the background
                   NOTICE_WAIT_S, "the old shard to close on its node")
        values.put("k", 2)
        with pytest.raises(FencedError):
            old.flush()
        assert new.value_state("v", value_serializer=INT64).get("k") == 1

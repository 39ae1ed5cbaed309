"""Acceptance of the cluster issue: a fourth node takes about a quarter of the shards."""
from __future__ import annotations

import pytest

from stateserver.client import BYTES, StateClient, ranges_for_parallelism
from stateserver.protocol import placement
from support.cluster import Cluster

NAMESPACE = "rebalanced"
MAX_KEY_GROUPS = 256
SHARDS = 64  # enough shards that "about a quarter" is a meaningful fraction

pytestmark = pytest.mark.timeout(240)


def test_adding_a_node_moves_only_the_shards_it_wins_and_keeps_every_value(cluster: Cluster) -> None:
    ranges = ranges_for_parallelism(MAX_KEY_GROUPS, SHARDS)
    items = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(20_000)}
    with StateClient(cluster.addresses) as state:
        state.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
        writer = state.open_writer(NAMESPACE, key_groups=ranges, epoch=1)
        values = writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
        values.put_many(items)
        writer.snapshot(1)
        state.commit_checkpoint(NAMESPACE, 1, writer.await_snapshot(1), writers=[writer])
        writer.notify_checkpoint_complete(1)
        before = {r: s.connection.address for r, s in zip(ranges, writer.sessions)}

        fourth = cluster.add_node()
        state.nodes = cluster.members  # the operator rolls the new node list out (every worker)
        moved = state.rebalance(writer, checkpoint_id=1, epoch=2)

        owners = {r: placement.owner(f"{NAMESPACE}/{r}", cluster.members) for r in ranges}
        expected = {r for r in ranges if owners[r] in cluster.workers_of(fourth)}
        assert set(moved) == expected, "exactly the shards the new node wins by rendezvous hashing move"
        # Loose bounds: on random ports the share is binomial(64, 1/4); these fail about 2 runs in 10^5.
        assert 0.05 * SHARDS <= len(moved) <= 0.5 * SHARDS, f"about a quarter should move, {len(moved)} did"
        after = {s.key_groups: s.connection.address for s in writer.sessions}
        for key_groups in ranges:
            assert after[key_groups] == (owners[key_groups] if key_groups in expected else before[key_groups])

        fetched = values.get_many(list(items))
        assert fetched == list(items.values()), "every key keeps its value"
        open_on_fourth = cluster.open_shards(fourth)
        assert open_on_fourth == {f"{NAMESPACE}/{r}" for r in expected}
        writer.close()

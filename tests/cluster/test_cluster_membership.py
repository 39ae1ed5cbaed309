"""Membership that changes without restarts (issue 12, point 5), on real node processes.

Three nodes read their node list from a file. A fourth node starts and is added to the file: the
nodes that watch the file follow it within seconds, the one that does not follows on SIGHUP, none
restarts, and every NodeInfo lists four nodes. The running writer keeps its shards where they are
(a node that is no longer a shard's owner serves its writer until it reopens; only OpenShard gets
WrongNode), and ``rebalance`` at the next checkpoint moves exactly the shards the fourth node wins
by rendezvous hashing, about a quarter. Counts are exact.

Fails on the code before the change: there was no ``--nodes-file`` (the nodes do not start), a
SIGHUP killed the node, and NodeInfo never changed.
"""
from __future__ import annotations

import os
import random
import signal
import time

import grpc
import pytest

from stateserver.client import StateClient, ranges_for_parallelism
from stateserver.client.checkpointing import CheckpointCoordinator, KeyedStateBackend
from stateserver.protocol import placement
from stateserver.protocol.v1 import state_pb2 as pb
from support.cluster import Cluster, expected_counts
from support.node import rpc_error_reason, shard_ref

NAMESPACE = "membership"
MAX_KEY_GROUPS = 256
SHARDS = 64
EVENTS = 6_000

pytestmark = pytest.mark.timeout(240)


def _listed(cluster: Cluster, address: str) -> list[str]:
    """The members node ``address`` lists (NodeInfo of its first worker)."""
    return sorted(cluster.nodes[address].stub().NodeInfo(pb.NodeInfoRequest(), timeout=10).nodes)


def _wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_fourth_node_joins_by_the_nodes_file_without_restarts_and_takes_a_quarter_at_a_checkpoint(
        file_listed_cluster: Cluster) -> None:
    cluster = file_listed_cluster
    first, *watching = cluster.addresses
    pids = {address: node.pid for address, node in cluster.nodes.items()}
    generator = random.Random(5)
    events = [f"key-{generator.randrange(500)}" for _ in range(EVENTS)]
    ranges = ranges_for_parallelism(MAX_KEY_GROUPS, SHARDS)

    with StateClient(first, timeout=20) as state:  # one seed: the client learns the rest
        state.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
        coordinator = CheckpointCoordinator(state, NAMESPACE)
        backend = KeyedStateBackend(state, NAMESPACE, key_groups=ranges)
        coordinator.recover([backend])
        counts = backend.writer.aggregating_state("counts", merge_operator="sum_int64")
        assert sorted(state.nodes) == sorted(cluster.members)
        for word in events[:2_000]:
            counts.merge(word, 1)
        coordinator.checkpoint([backend], metadata=b"2000")
        before = {s.key_groups: s.connection.address for s in backend.writer.sessions}

        fourth = cluster.add_node()  # rewrites the file, then starts the new node on it
        four = sorted(cluster.members)
        _wait_until(lambda: all(_listed(cluster, a) == four for a in watching), 10, "watchers follow the file")
        assert len(_listed(cluster, first)) == len(four) - len(cluster.workers_of(fourth)), \
            "without SIGHUP the first node keeps its list"
        os.kill(cluster.nodes[first].pid, signal.SIGHUP)
        _wait_until(lambda: _listed(cluster, first) == four, 10, "SIGHUP reloads the file")
        assert all(_listed(cluster, a) == four for a in cluster.addresses)
        assert all(cluster.nodes[a].is_alive() and cluster.nodes[a].pid == pid for a, pid in pids.items()), \
            "no node restarted"

        owners = {r: placement.owner(f"{NAMESPACE}/{r}", cluster.members) for r in ranges}
        won = {r for r in ranges if owners[r] in cluster.workers_of(fourth)}
        # The old owner of a shard the fourth node won still serves its writer ...
        for word in events[2_000:4_000]:
            counts.merge(word, 1)
        backend.writer.flush()
        # ... but refuses to open it again: that open belongs on the fourth node.
        moved_range = sorted(won)[0]
        with pytest.raises(grpc.RpcError) as refused:
            cluster.stub(before[moved_range]).OpenShard(pb.OpenShardRequest(
                shard=shard_ref(NAMESPACE, (moved_range.start, moved_range.end), 1 << 30), owner_id="someone"),
                timeout=10)
        assert rpc_error_reason(refused.value) == "wrong-node"

        checkpoint_id = coordinator.checkpoint([backend], metadata=b"4000")
        moved = state.rebalance(backend.writer, checkpoint_id=checkpoint_id, epoch=state.next_epoch(NAMESPACE))
        assert sorted(state.nodes) == sorted(cluster.members), "the client followed the nodes"
        assert set(moved) == won, "exactly the shards the new node wins move"
        # Loose bounds: on random ports the share is binomial(64, 1/4); these fail about 2 runs in 10^5.
        assert 0.05 * SHARDS <= len(moved) <= 0.5 * SHARDS, f"about a quarter should move, {len(moved)} did"
        after = {s.key_groups: s.connection.address for s in backend.writer.sessions}
        assert after == {r: (owners[r] if r in won else before[r]) for r in ranges}
        on_fourth = cluster.open_shards(fourth)
        assert on_fourth == {f"{NAMESPACE}/{r}" for r in won}

        backend.epoch = backend.writer.epoch  # the rebalance made the writer the owner at a new epoch
        coordinator = CheckpointCoordinator(state, NAMESPACE, epoch=backend.epoch)
        for word in events[4_000:]:
            counts.merge(word, 1)
        coordinator.checkpoint([backend], metadata=str(EVENTS).encode())
        words = sorted(set(events))
        assert dict(zip(words, counts.get_many(words))) == expected_counts(events), "nothing lost or counted twice"
        backend.close()

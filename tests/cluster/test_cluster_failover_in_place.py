"""Failover time (issue 12, point 7) on three real node processes: after a SIGKILL and
``CheckpointCoordinator.recover``, a surviving node keeps each of its shards that is still exactly
the restored checkpoint (no write since its cut) open as it is, instead of rebuilding it from its
local copy, closing the old shard and opening RocksDB again. A shard written since the checkpoint
is rebuilt (the write is discarded); the lost node's shards are downloaded; the attempt before
the recover is fenced on the kept shards.

Observable through each node's ``stateserver_restores_total{source=...}`` (``in_place`` is new).
Fails on the code before the change: every surviving shard was restored from its local copy
(``source="local"``), and no ``in_place`` figure existed.
"""
from __future__ import annotations

import grpc
import pytest

from stateserver.client import (
    BYTES, CheckpointCoordinator, KeyedStateBackend, StateClient, StateServerError, key_group_for,
    ranges_for_parallelism,
)
from stateserver.protocol import placement
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.operations import WriteOp
from support.cluster import Cluster
from support.metrics import scrape, total
from support.node import rpc_error_reason, shard_ref, write_request

MAX_KEY_GROUPS = 128
PARALLELISM = 9

pytestmark = pytest.mark.timeout(240)


def restores(metrics_port: int) -> dict[str, float]:
    samples = scrape(metrics_port)
    return {source: total(samples, "stateserver_restores_total", source=source)
            for source in ("in_place", "local", "download")}


def owners(cluster: Cluster, namespace: str) -> list[str]:
    """The node (address) of each subtask's shard."""
    return [cluster.shard_node(namespace, r) for r in ranges_for_parallelism(MAX_KEY_GROUPS, PARALLELISM)]


def spread_namespace(cluster: Cluster) -> str:
    """A namespace with two or more shards on every node (placement hashes the random ports)."""
    for index in range(200):
        namespace = f"in-place-{index}"
        found = owners(cluster, namespace)
        if all(found.count(address) >= 2 for address in cluster.addresses):
            return namespace
    raise AssertionError("no namespace spreads over every node")


def key_in(key_groups: KeyGroupRange, number: int = 0) -> bytes:
    start, end = key_groups.start, key_groups.end
    found = [k for k in (b"key-%d" % n for n in range(100_000)) if start <= key_group_for(k, MAX_KEY_GROUPS) <= end]
    return found[number]


def test_unchanged_shards_of_survivors_are_kept_in_place_serve_the_checkpoint_and_fence_the_old_epoch(
        metered_cluster: tuple[Cluster, dict[str, int]]) -> None:
    cluster, metrics_ports = metered_cluster
    namespace = spread_namespace(cluster)
    shard_nodes = owners(cluster, namespace)
    victim = cluster.addresses[0]
    survivors = [a for a in cluster.addresses if a != victim]
    lost = [i for i, node in enumerate(shard_nodes) if node == victim]
    changed = shard_nodes.index(survivors[0])  # written after the checkpoint: not kept
    ranges = ranges_for_parallelism(MAX_KEY_GROUPS, PARALLELISM)
    keys = [key_in(r) for r in ranges]
    with StateClient(cluster.addresses, timeout=20) as client:
        client.create_namespace(namespace, max_key_groups=MAX_KEY_GROUPS)
        coordinator = CheckpointCoordinator(client, namespace)
        subtasks = [KeyedStateBackend(client, namespace, key_groups=r) for r in ranges]
        coordinator.recover(subtasks)
        states = [s.writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES) for s in subtasks]
        for index, state in enumerate(states):
            state.put(keys[index], b"checkpointed-%d" % index)
            subtasks[index].writer.flush()
        checkpoint_id = coordinator.checkpoint(subtasks)
        states[changed].put(keys[changed], b"after the checkpoint")
        subtasks[changed].writer.flush()
        old_epoch = coordinator.epoch
        before = {address: restores(metrics_ports[address]) for address in survivors}

        cluster.kill(victim)
        with pytest.raises(StateServerError):
            for _ in range(50):  # the client learns of the loss from a write to a lost shard
                states[lost[0]].put(keys[lost[0]], b"lost")
                subtasks[lost[0]].writer.flush()
        recovery = coordinator.recover(subtasks)
        assert recovery.checkpoint_id == checkpoint_id and recovery.epoch > old_epoch

        after = {address: restores(metrics_ports[address]) for address in survivors}
        spent = {address: {source: after[address][source] - before[address][source] for source in after[address]}
                 for address in survivors}
        kept_expected = sum(1 for node in shard_nodes if node in survivors) - 1
        assert sum(s["in_place"] for s in spent.values()) == kept_expected, spent
        assert sum(s["local"] for s in spent.values()) == 1, spent  # the changed shard, from its local copy
        assert sum(s["download"] for s in spent.values()) == len(lost), spent
        # Every shard serves exactly the checkpoint: the kept ones, the rebuilt one, the moved ones.
        assert [state.get(keys[index]) for index, state in enumerate(states)] == [
            b"checkpointed-%d" % index for index in range(PARALLELISM)]
        # The attempt before the recover is fenced on the kept shards, and its write changes nothing.
        kept = [i for i, node in enumerate(shard_nodes) if node in survivors and i != changed]
        for index in kept:
            r = ranges[index]
            stub = cluster.stub(placement.owner(f"{namespace}/{r}", cluster.members))
            stale = write_request(shard_ref(namespace, (r.start, r.end), old_epoch), "v", [WriteOp.PUT],
                                  [keys[index]], [b"stale"])
            with pytest.raises(grpc.RpcError) as refused:
                stub.WriteBatch(stale, timeout=10)
            assert rpc_error_reason(refused.value) == "fenced"
            assert states[index].get(keys[index]) == b"checkpointed-%d" % index
        # The new attempt writes, checkpoints and commits on the kept shards as on any other.
        for index, state in enumerate(states):
            state.put(keys[index], b"next-%d" % index)
            subtasks[index].writer.flush()
        coordinator.checkpoint(subtasks)

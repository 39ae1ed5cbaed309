"""``recover`` (issue 12, point 3) against a real node: a first start is empty at a newly allocated
epoch; a later call restores exactly the latest committed checkpoint at a higher epoch, keeps the
state handles the operator holds, returns the metadata committed with it, and checkpoint ids keep
growing. Fails on the code before the change: there was no ``recover`` (AttributeError).
"""
from __future__ import annotations

import pytest

from stateserver.client import (
    CheckpointCoordinator, FencedError, KeyedStateBackend, ShardNotOpenError, StateClient, first_checkpoint_id,
)
from support.node import NodeProcess, namespace_on_one_worker


def test_recover_starts_empty_then_restores_the_latest_checkpoint_with_the_same_handles(
        client: StateClient, node: NodeProcess, request: pytest.FixtureRequest) -> None:
    # Every shard on one worker: a newer open fences the older writers' writes in the process that
    # opens it; writes that go to another process (a worker, or a node of a cluster) are refused only
    # when that writer's shards reopen or commit.
    namespace = namespace_on_one_worker(node, request.node.name, [(0, 63), (64, 127), (0, 127)])
    client.create_namespace(namespace, max_key_groups=128)
    coordinator = CheckpointCoordinator(client, namespace)
    subtasks = [KeyedStateBackend(client, namespace, key_groups=r) for r in ("0-63", "64-127")]
    with pytest.raises(ShardNotOpenError):
        coordinator.next_checkpoint_id()  # no attempt before recover()

    first = coordinator.recover(subtasks)
    assert (first.epoch, first.checkpoint_id, first.metadata) == (1, None, b"")
    writers = [s.writer for s in subtasks]
    counts = [s.writer.aggregating_state("counts", merge_operator="sum_int64") for s in subtasks]
    counts[0].merge("k", 5)  # key group 29
    committed = coordinator.checkpoint(subtasks, metadata=b"offset=5")
    assert committed == first_checkpoint_id(1)
    counts[0].merge("k", 100)  # after the checkpoint: a recovery drops it
    subtasks[0].writer.flush()

    second = coordinator.recover(subtasks)
    assert (second.epoch, second.checkpoint_id, second.metadata) == (2, committed, b"offset=5")
    assert [s.writer for s in subtasks] == writers, "the writers the operator holds stay the same objects"
    assert all(s.epoch == 2 and s.writer.epoch == 2 for s in subtasks)
    assert counts[0].get("k") == 5
    counts[0].merge("k", 1)
    again = coordinator.checkpoint(subtasks, metadata=b"offset=6")
    assert again == first_checkpoint_id(2) > committed

    third = KeyedStateBackend(client, namespace, key_groups="0-127").recover()  # one subtask on its own
    assert (third.epoch, third.checkpoint_id, third.metadata) == (3, again, b"offset=6")
    # the recovered attempts fenced the older ones
    with pytest.raises(FencedError):
        counts[0].merge("k", 1)
        subtasks[0].writer.flush()


def test_recover_takes_the_writers_out_of_a_failed_session(client: StateClient, namespace: str) -> None:
    coordinator = CheckpointCoordinator(client, namespace)
    subtasks = [KeyedStateBackend(client, namespace, key_groups="0-127")]
    coordinator.recover(subtasks)
    values = subtasks[0].writer.value_state("v")
    values.put("a", 1)
    coordinator.checkpoint(subtasks, metadata=b"1")
    # A newer attempt elsewhere fences this one: its writes fail, and recover() takes over again.
    other = KeyedStateBackend(client, namespace, key_groups="0-127")
    other.recover()
    values.put("a", 2)
    with pytest.raises(FencedError):
        subtasks[0].writer.flush()
    recovery = coordinator.recover(subtasks)
    assert recovery.epoch == 3 and recovery.metadata == b"1"
    assert values.get("a") == 1

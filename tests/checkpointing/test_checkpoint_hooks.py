"""The checkpoint hooks end to end: an operator loop that checkpoints, crashes, restores the latest
checkpoint, replays its source from the offset in that checkpoint, and ends exactly where a run
without a crash ends; and a stale attempt that cannot commit."""
from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from stateserver.client import (
    CheckpointCoordinator,
    FencedError,
    InvalidArgumentError,
    KeyedStateBackend,
    NotFoundError,
    StateClient,
    first_checkpoint_id,
    key_group_for,
    ranges_for_parallelism,
)
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.store import open_store
from support.node import NodeProcess, start_node, unique_namespace

EVENTS = 3000
CHECKPOINT_EVERY = 400


@pytest.fixture(scope="module")
def events() -> list[str]:
    rng = random.Random(11)
    return [f"w{rng.randrange(150)}" for _ in range(EVENTS)]


def test_operator_restores_the_latest_checkpoint_after_its_writers_die(
        node, namespace: str, events: list[str], operator: ModuleType) -> None:
    # Small batches, so that writes made after the last checkpoint reach the node before the
    # crash: the restore must drop them, or the replay would count those events twice.
    with StateClient(node.address, timeout=20, batch_ops=50) as client:
        with pytest.raises(operator.Crash):
            operator.run_operator(client, namespace, events, epoch=1, restore=None,
                                  checkpoint_every=CHECKPOINT_EVERY, crash_after=1337)
        counts = operator.run_operator(client, namespace, events, epoch=2, restore="latest",
                                       checkpoint_every=CHECKPOINT_EVERY)
    assert counts == dict(Counter(events))


def test_operator_restores_after_its_node_is_killed_and_restarted(
        tmp_path: Path, events: list[str], operator: ModuleType) -> None:
    namespace = unique_namespace("sigkill")
    data_dir = tmp_path / "data"
    node = start_node(data_dir)
    try:
        with StateClient(node.address, timeout=20, batch_ops=50) as client:
            client.create_namespace(namespace, max_key_groups=128)
            with pytest.raises(operator.Crash):
                operator.run_operator(client, namespace, events, epoch=1, restore=None,
                                      checkpoint_every=CHECKPOINT_EVERY, crash_after=2222)
        node.kill()  # SIGKILL: nothing flushed, no shard closed
        node = start_node(data_dir)
        with StateClient(node.address, timeout=20) as client:
            counts = operator.run_operator(client, namespace, events, epoch=2, restore="latest",
                                           checkpoint_every=CHECKPOINT_EVERY)
    finally:
        node.stop()
    assert counts == dict(Counter(events))


def test_a_crash_before_the_first_checkpoint_starts_again_from_nothing(
        node, namespace: str, events: list[str], operator: ModuleType) -> None:
    with StateClient(node.address, timeout=20, batch_ops=50) as client:
        with pytest.raises(operator.Crash):
            operator.run_operator(client, namespace, events, epoch=1, restore=None,
                                  checkpoint_every=CHECKPOINT_EVERY, crash_after=CHECKPOINT_EVERY - 7)
        # A fresh start again (the engine kept no checkpoint id) starts from empty state ...
        with pytest.raises(operator.Crash):
            operator.run_operator(client, namespace, events, epoch=2, restore=None,
                                  checkpoint_every=CHECKPOINT_EVERY, crash_after=CHECKPOINT_EVERY // 2)
        # ... there is no checkpoint to restore ...
        with pytest.raises(NotFoundError):
            operator.run_operator(client, namespace, events, epoch=3, restore="latest",
                                  checkpoint_every=CHECKPOINT_EVERY)
        # ... and the next fresh start counts every event once.
        counts = operator.run_operator(client, namespace, events, epoch=4, restore=None,
                                       checkpoint_every=CHECKPOINT_EVERY)
    assert counts == dict(Counter(events))


def _subtasks(client: StateClient, namespace: str, epoch: int) -> list[KeyedStateBackend]:
    return [KeyedStateBackend(client, namespace, key_groups=key_groups, epoch=epoch)
            for key_groups in ranges_for_parallelism(128, 2)]


def _total(subtasks: list[KeyedStateBackend], keys: list[str]) -> int:
    return sum(value or 0 for subtask in subtasks
               for value in _owned_counts(subtask, keys))


def _owned_counts(subtask: KeyedStateBackend, keys: list[str]) -> list[int | None]:
    counts = subtask.writer.aggregating_state("counts", merge_operator="sum_int64")
    mine = [key for key in keys if any(r.start <= _key_group(key) <= r.end for r in subtask.key_groups)]
    return counts.get_many(mine)


def _key_group(key: str) -> int:
    return key_group_for(key.encode(), 128)


def _merge_all(subtasks: list[KeyedStateBackend], keys: list[str], amount: int) -> None:
    for subtask in subtasks:
        counts = subtask.writer.aggregating_state("counts", merge_operator="sum_int64")
        for key in keys:
            if any(r.start <= _key_group(key) <= r.end for r in subtask.key_groups):
                counts.merge(key, amount)


def test_a_stale_attempt_can_neither_commit_nor_write(client: StateClient, namespace: str) -> None:
    keys = [f"k{i}" for i in range(40)]
    old = CheckpointCoordinator(client, namespace, epoch=1)
    old_subtasks = _subtasks(client, namespace, 1)
    old.initialize(old_subtasks)
    _merge_all(old_subtasks, keys, 1)
    committed = old.checkpoint(old_subtasks)
    assert committed == first_checkpoint_id(1)
    _merge_all(old_subtasks, keys, 100)
    stale_id = old.next_checkpoint_id()
    for subtask in old_subtasks:
        subtask.snapshot_state(stale_id)  # the sync phase ran before the new attempt took over ...
    durable = [handle for subtask in old_subtasks for handle in subtask.await_durable(stale_id)]  # ... and the upload

    new = CheckpointCoordinator(client, namespace, epoch=2)
    new_subtasks = _subtasks(client, namespace, 2)
    new.initialize(new_subtasks, restore="latest")

    with pytest.raises(FencedError):
        client.commit_checkpoint(namespace, stale_id, durable, writers=[s.writer for s in old_subtasks])
    with pytest.raises((FencedError, NotFoundError)):  # the takeover dropped the old shard's snapshots
        old.complete(stale_id, old_subtasks)
    with pytest.raises(FencedError):  # the coordinator refuses subtasks of another attempt outright
        new.complete(stale_id, old_subtasks)
    with pytest.raises(FencedError):
        _merge_all(old_subtasks[:1], keys, 1000)
        old_subtasks[0].writer.flush()

    assert _total(new_subtasks, keys) == len(keys)  # the new attempt restored checkpoint 1 of epoch 1
    assert new.checkpoint(new_subtasks) > stale_id
    latest = _subtasks(client, namespace, 3)
    CheckpointCoordinator(client, namespace, epoch=3).initialize(latest, restore="latest")
    assert _total(latest, keys) == len(keys)


def test_a_failed_commit_aborts_and_the_next_checkpoint_commits(client: StateClient, namespace: str) -> None:
    coordinator = CheckpointCoordinator(client, namespace, epoch=1)
    subtasks = _subtasks(client, namespace, 1)
    coordinator.initialize(subtasks)
    _merge_all(subtasks, ["a", "b", "c"], 5)
    checkpoint_id = coordinator.next_checkpoint_id()
    for subtask in subtasks:
        assert subtask.snapshot_state(checkpoint_id) >= 0.0
    with pytest.raises(InvalidArgumentError):  # half the namespace: the key-group ranges do not tile it
        coordinator.complete(checkpoint_id, subtasks[:1])
    assert coordinator.checkpoint(subtasks) > checkpoint_id
    restored = _subtasks(client, namespace, 2)
    CheckpointCoordinator(client, namespace, epoch=2).initialize(restored, restore="latest")
    assert _total(restored, ["a", "b", "c"]) == 15


def test_a_fresh_start_is_empty_whatever_was_written_before(client: StateClient, namespace: str) -> None:
    first = _subtasks(client, namespace, 1)
    CheckpointCoordinator(client, namespace, epoch=1).initialize(first)
    assert _total(first, ["x"]) == 0
    _merge_all(first, ["x"], 3)
    first[0].writer.flush()
    first[1].writer.flush()
    again = _subtasks(client, namespace, 2)
    CheckpointCoordinator(client, namespace, epoch=2).initialize(again, restore=None)
    assert _total(again, ["x"]) == 0


@pytest.mark.timeout(120)
def test_a_fresh_start_after_retention_retired_the_first_checkpoint_is_empty(
        node: NodeProcess, client: StateClient, namespace: str) -> None:
    """Issue 11 defect 3: a fresh start used to restore checkpoint 1, which retention deletes
    after three more commits; it then fell back to the nodes' copies and read the old job's
    values (fails on the old code: the total is 4 x 3, not 0)."""
    first = _subtasks(client, namespace, 1)
    coordinator = CheckpointCoordinator(client, namespace, epoch=1)
    coordinator.initialize(first)
    committed = []
    for _ in range(4):
        _merge_all(first, ["x"], 3)
        committed.append(coordinator.checkpoint(first))
    catalog = CheckpointCatalog(open_store((node.data_dir / "snapshots").resolve().as_uri()))
    deadline = time.monotonic() + 30
    while catalog.committed_ids(namespace)[:1] != [committed[1]]:  # retention keeps the last 3
        assert time.monotonic() < deadline, catalog.committed_ids(namespace)
        time.sleep(0.1)
    fresh = _subtasks(client, namespace, 2)
    CheckpointCoordinator(client, namespace, epoch=2).initialize(fresh, restore=None)
    assert _total(fresh, ["x"]) == 0
    restored = _subtasks(client, namespace, 3)
    CheckpointCoordinator(client, namespace, epoch=3).initialize(restored, restore="latest")
    assert _total(restored, ["x"]) == 4 * 3

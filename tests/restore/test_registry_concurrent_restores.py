"""The registry builds shards outside its lock: restores of different shards run at the same time,
a long restore holds up neither scrapes nor other shards, and overlapping opens wait for it."""
from __future__ import annotations

import concurrent.futures
import pathlib
import threading

import pytest

from restore.state_builder import small_resources
from stateserver.protocol.errors import Fenced
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.limits import Limits
from stateserver.node.registry import ShardRegistry
from stateserver.node.shard_open import OpenSource, PreparedRestore
from stateserver.shard.shard import ShardId

WAIT_S = 10.0


class GatedRestorer:
    """A restorer that makes an empty shard directory, once ``gate`` opens; records who entered."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered: list[ShardId] = []
        self.inside = threading.Semaphore(0)

    def __call__(self, shard_id: ShardId, path: pathlib.Path) -> PreparedRestore:
        self.entered.append(shard_id)
        self.inside.release()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        building = path.parent / f".{path.name}.restoring-test"
        building.mkdir(parents=True, exist_ok=True)
        return PreparedRestore(directory=building, checkpoint_id=1, result=None)

    @property
    def source(self) -> OpenSource:
        return OpenSource(restore=self)


@pytest.fixture
def registry(tmp_path: pathlib.Path) -> ShardRegistry:
    registry = ShardRegistry(tmp_path / "data", small_resources(), Limits())
    registry.create_namespace("ns", 16)
    return registry


def test_restores_of_different_shards_run_together_and_do_not_block_scrapes(registry: ShardRegistry) -> None:
    restorer = GatedRestorer()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(registry.open_shard, "ns", 0, 7, 1, [], restorer.source)
        second = pool.submit(registry.open_shard, "ns", 8, 15, 1, [], restorer.source)
        for _ in range(2):  # both are inside their restore at once
            assert restorer.inside.acquire(timeout=WAIT_S)
        assert registry.open_shards() == []  # a scrape is answered meanwhile
        restorer.gate.set()
        shards = [first.result(WAIT_S), second.result(WAIT_S)]
    assert sorted(str(s.key_groups) for s in registry.open_shards()) == ["0-7", "8-15"]
    assert [s.epoch for s in shards] == [1, 1]
    assert registry.close_all() == 0


def test_an_overlapping_open_waits_for_the_restore_and_a_stale_one_is_fenced(registry: ShardRegistry) -> None:
    restorer = GatedRestorer()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        restoring = pool.submit(registry.open_shard, "ns", 0, 15, 2, [], restorer.source)
        assert restorer.inside.acquire(timeout=WAIT_S)
        stale = pool.submit(registry.open_shard, "ns", 0, 7, 1, [])
        assert not stale.done()  # waits: its key groups are being restored
        restorer.gate.set()
        assert restoring.result(WAIT_S).epoch == 2
        with pytest.raises(Fenced):
            stale.result(WAIT_S)
    assert [str(s.key_groups) for s in registry.open_shards()] == ["0-15"]
    assert restorer.entered == [ShardId("ns", registry.open_shards()[0].key_groups)]
    assert registry.close_all() == 0


def test_close_all_waits_for_a_shard_being_restored_and_closes_it(registry: ShardRegistry) -> None:
    restorer = GatedRestorer()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        restoring = pool.submit(registry.open_shard, "ns", 0, 15, 1, [], restorer.source)
        assert restorer.inside.acquire(timeout=WAIT_S)
        closing = pool.submit(registry.close_all)
        assert not closing.done()
        restorer.gate.set()
        shard = restoring.result(WAIT_S)
        assert closing.result(WAIT_S) == 0
    assert shard.closed and registry.open_shards() == []


def test_a_failed_restore_leaves_no_shard_and_releases_its_key_groups(registry: ShardRegistry) -> None:
    def failing(shard_id: ShardId, path: pathlib.Path) -> PreparedRestore:
        raise OSError("the store went away")

    with pytest.raises(OSError):
        registry.open_shard("ns", 0, 15, 1, [], OpenSource(restore=failing))
    assert registry.open_shards() == []
    assert registry.open_shard("ns", 0, 7, 1, []).epoch == 1  # not waiting for the failed one
    assert registry.close_all() == 0


def test_a_newer_writer_elsewhere_fences_an_older_open_under_way_and_the_open_shards(registry: ShardRegistry) -> None:
    """Another member's newer writer (``fence_older``) arrives while epoch 1 is still restoring
    0-7 here and 8-11 is open at epoch 1: the fence does not wait for the restore; it closes 8-11
    at once, and the restore, once done, is refused (Fenced), not served. 12-15 at epoch 3 is
    newer and stays. (New with peer fencing: before it a node had no such call.)"""
    registry.open_shard("ns", 8, 11, 1, [], OpenSource(empty=True))
    registry.open_shard("ns", 12, 15, 3, [], OpenSource(empty=True))
    restorer = GatedRestorer()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        opening = pool.submit(registry.open_shard, "ns", 0, 7, 1, [], restorer.source)
        assert restorer.inside.acquire(timeout=WAIT_S)
        assert registry.fence_older("ns", KeyGroupRange(0, 15), 2) == [ShardId("ns", KeyGroupRange(8, 11))]
        restorer.gate.set()
        with pytest.raises(Fenced):
            opening.result(WAIT_S)
    assert [str(s.key_groups) for s in registry.open_shards()] == ["12-15"]
    for start, end in ((0, 7), (8, 11)):
        with pytest.raises(Fenced):
            registry.shard("ns", start, end, 1)
        with pytest.raises(Fenced):
            registry.open_shard("ns", start, end, 1, [], OpenSource(empty=True))
    assert not (registry.data_dir / "namespaces" / "ns" / "shards" / "8-11").exists(), "its directory was discarded"


def test_a_fenced_writer_hears_fenced_while_its_shard_is_still_closing(registry: ShardRegistry) -> None:
    """Between a fence from another member and the end of the close it starts (the close waits for
    requests in flight), a request of the fenced writer hears Fenced: the writer must reopen at a
    newer epoch, not retry.

    Fails on the code before the change: the request heard ShardClosed ("being opened or closed on
    this node; retry shortly"), a retriable error, as if nothing had fenced it (seen in the cluster
    test test_a_rescale_onto_other_nodes_fences_and_closes_the_old_shards under load)."""
    shard = registry.open_shard("ns", 0, 7, 1, [], OpenSource(empty=True))
    in_flight = shard.lease()
    in_flight.__enter__()  # a request of the old writer still running: the close waits for it
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fencing = pool.submit(registry.fence_older, "ns", KeyGroupRange(0, 15), 2)
            while not shard.closed:  # the close has begun and waits for the lease
                assert not fencing.done(), fencing.result()
                threading.Event().wait(0.01)
            with pytest.raises(Fenced):
                registry.shard("ns", 0, 7, 1)
            in_flight.__exit__(None, None, None)
            in_flight = None
            assert fencing.result(WAIT_S) == [ShardId("ns", KeyGroupRange(0, 7))]
    finally:
        if in_flight is not None:
            in_flight.__exit__(None, None, None)
    with pytest.raises(Fenced):
        registry.shard("ns", 0, 7, 1)

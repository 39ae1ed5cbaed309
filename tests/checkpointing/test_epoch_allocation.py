"""Epochs without counters (issue 12, point 1): ``next_epoch`` allocates create-only in the snapshot
store, above every epoch used for the namespace, never twice, and retention never removes them.

These tests fail on the code before the change: there was no ``AllocateEpoch`` RPC nor
``StateClient.next_epoch`` (AttributeError), and no ``<ns>/epochs/`` keys.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime

import pytest

from stateserver.client import InvalidArgumentError, NotFoundError, StateClient
from stateserver.client.aio import AsyncStateClient
from stateserver.store import paths
from stateserver.ownership.epoch_allocation import allocate_epoch, highest_allocated
from stateserver.protocol.epochs import MAX_EPOCH
from stateserver.protocol.errors import ResourceExhausted
from stateserver.snapshot.gc import collect_garbage
from stateserver.store import ObjectStore, open_store
from support.node import NodeProcess, unique_namespace


def _store(node: NodeProcess) -> ObjectStore:
    return open_store((node.data_dir / "snapshots").resolve().as_uri())


def test_next_epoch_grows_and_each_allocation_is_an_object(client: StateClient, namespace: str,
                                                           node: NodeProcess) -> None:
    first, second = client.next_epoch(namespace), client.next_epoch(namespace)
    assert (first, second) == (1, 2)
    store = _store(node)
    assert sorted(m.key for m in store.list(paths.epochs_prefix(namespace))) == [
        paths.allocated_epoch(namespace, 1), paths.allocated_epoch(namespace, 2)]
    assert highest_allocated(store, namespace) == 2


def test_concurrent_next_epoch_calls_from_threads_never_collide(client: StateClient, namespace: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        epochs = list(pool.map(lambda _: client.next_epoch(namespace), range(40)))
    assert len(set(epochs)) == 40
    assert sorted(epochs) == list(range(1, 41))


def test_concurrent_allocations_in_the_store_never_collide(node: NodeProcess) -> None:
    """Below the node: racing callers (as on several nodes) each win a different number."""
    store, namespace = _store(node), unique_namespace("race")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        epochs = list(pool.map(lambda _: allocate_epoch(store, namespace), range(32)))
    assert sorted(epochs) == list(range(1, 33))


def test_next_epoch_is_above_the_epochs_of_writers_that_chose_their_own(client: StateClient, namespace: str) -> None:
    writer = client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=41, restore="empty")
    writer.close()
    assert client.next_epoch(namespace) == 42
    # and an explicit epoch still works after allocations
    client.open_writer(namespace, key_groups="0-127", epoch=50, restore="empty").close()
    assert client.next_epoch(namespace) == 51


def test_the_asyncio_client_allocates_too(node: NodeProcess, client: StateClient, namespace: str) -> None:
    assert client.next_epoch(namespace) == 1

    async def allocate() -> list[int]:
        async with AsyncStateClient(node.address) as aio:
            return list(await asyncio.gather(*(aio.next_epoch(namespace) for _ in range(5))))

    assert sorted(asyncio.run(allocate())) == [2, 3, 4, 5, 6]


def test_an_unknown_or_malformed_namespace_allocates_nothing(client: StateClient, node: NodeProcess) -> None:
    with pytest.raises(NotFoundError):
        client.next_epoch("never-created")
    with pytest.raises(InvalidArgumentError):
        client.next_epoch("../escape")
    assert list(_store(node).list(paths.epochs_prefix("never-created"))) == []


def test_no_epoch_above_max_epoch_is_allocated(node: NodeProcess) -> None:
    store, namespace = _store(node), unique_namespace("max")
    assert store.put_if_absent(paths.allocated_epoch(namespace, MAX_EPOCH - 1), b"{}")
    assert allocate_epoch(store, namespace) == MAX_EPOCH
    with pytest.raises(ResourceExhausted):
        allocate_epoch(store, namespace)
    assert highest_allocated(store, namespace) == MAX_EPOCH


def test_garbage_collection_never_deletes_allocated_epochs(client: StateClient, namespace: str,
                                                            node: NodeProcess) -> None:
    for _ in range(3):
        client.next_epoch(namespace)
    store = _store(node)
    before = sorted(m.key for m in store.list(paths.epochs_prefix(namespace)))
    assert all(paths.parse_key(key) is None for key in before)  # not spelled for GC
    collect_garbage(store, namespace, retain=1, min_age=datetime.timedelta(0),
                    now=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1), dry_run=False)
    assert sorted(m.key for m in store.list(paths.epochs_prefix(namespace))) == before
    assert client.next_epoch(namespace) == 4

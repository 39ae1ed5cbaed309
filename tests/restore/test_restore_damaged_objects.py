"""A corrupted or deleted object is found by verify and by restore, with an error naming it."""
from __future__ import annotations

import concurrent.futures
import pathlib
import urllib.parse
from collections.abc import Iterator

import pytest

from restore.state_builder import NamespaceState, small_resources
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectStore, RetryingObjectStore, open_store
from stateserver.restore import CorruptObject, MissingObject, restore_shard
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        yield pool


def checkpointed(tmp_path: pathlib.Path, store: ObjectStore) -> cpb.CheckpointMetadata:
    source = NamespaceState(tmp_path / "source", store, "damaged", parallelism=2)
    try:
        source.write_every_kind(500)
        return source.checkpoint(1)
    finally:
        source.close()


def corrupt_in_place(store_url: str, store: ObjectStore, key: str) -> None:
    """Same size, different bytes: only a checksum can tell. On file:// the bytes on disk rot;
    on S3 someone puts other bytes at the key."""
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0xFF
    if store_url.startswith("file://"):
        (pathlib.Path(urllib.parse.urlsplit(store_url).path) / key).write_bytes(bytes(data))
    else:
        store.put(key, bytes(data))


@pytest.mark.parametrize("key_groups", [KeyGroupRange(0, 63), KeyGroupRange(0, 127)], ids=["full", "rescaling"])
def test_a_corrupted_object_is_named_by_verify_and_by_restore(store_url: str, tmp_path: pathlib.Path,
                                                              executor: concurrent.futures.Executor,
                                                              key_groups: KeyGroupRange) -> None:
    store = RetryingObjectStore(open_store(store_url))
    metadata = checkpointed(tmp_path, store)
    victim = max(metadata.shards[0].shared_files, key=lambda f: f.size).object_key
    corrupt_in_place(store_url, store, victim)

    catalog = CheckpointCatalog(store)
    assert catalog.verify(metadata) == []  # sizes alone cannot see it
    problems = catalog.verify(metadata, checksums=True)
    assert [p.object_key for p in problems] == [victim]
    assert "checksum" in problems[0].problem

    target = tmp_path / "restored" / str(key_groups)
    with pytest.raises(CorruptObject, match="checksum") as caught:
        restore_shard(store, metadata, key_groups, target, resources=small_resources(), executor=executor)
    assert caught.value.object_key == victim and victim in str(caught.value)
    assert list((tmp_path / "restored").iterdir()) == []  # nothing at the target, no build leftovers


@pytest.mark.parametrize("key_groups", [KeyGroupRange(64, 127), KeyGroupRange(32, 95)], ids=["full", "rescaling"])
def test_a_deleted_object_is_named_by_verify_and_by_restore(store_url: str, tmp_path: pathlib.Path,
                                                            executor: concurrent.futures.Executor,
                                                            key_groups: KeyGroupRange) -> None:
    store = RetryingObjectStore(open_store(store_url))
    metadata = checkpointed(tmp_path, store)
    victim = metadata.shards[1].private_files[0].object_key
    store.delete(victim)

    problems = CheckpointCatalog(store).verify(metadata)
    assert [(p.object_key, p.problem) for p in problems] == [(victim, "missing")]

    with pytest.raises(MissingObject, match="missing") as caught:
        restore_shard(store, metadata, key_groups, tmp_path / "restored" / str(key_groups),
                      resources=small_resources(), executor=executor)
    assert caught.value.object_key == victim and victim in str(caught.value)
    assert list((tmp_path / "restored").iterdir()) == []


def test_an_object_of_the_wrong_size_is_corrupt(tmp_path: pathlib.Path, executor: concurrent.futures.Executor) -> None:
    store = open_store((tmp_path / "store").as_uri())
    metadata = checkpointed(tmp_path, store)
    victim = metadata.shards[0].shared_files[0].object_key
    store.put(victim, store.get(victim)[:-10])
    assert [p.object_key for p in CheckpointCatalog(store).verify(metadata)] == [victim]
    with pytest.raises(CorruptObject, match="bytes; its manifest says"):
        restore_shard(store, metadata, KeyGroupRange(0, 63), tmp_path / "restored" / "0-63",
                      resources=small_resources(), executor=executor)

"""What every backend promises, run against memory://, file:// and the real S3 server."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from stateserver.store import InvalidObjectKey, ObjectMeta, ObjectNotFound, ObjectStore, open_store
from support.seaweedfs import SeaweedS3


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "memory":
        return open_store("memory://")
    if request.param == "file":
        return open_store((tmp_path / "store").as_uri())
    seaweed: SeaweedS3 = request.getfixturevalue("seaweed")
    return open_store(seaweed.fresh_url(), options=seaweed.options)


def test_put_then_get_returns_the_bytes_and_put_replaces(store: ObjectStore) -> None:
    store.put("ns/a/one", b"first")
    assert store.get("ns/a/one") == b"first"
    store.put("ns/a/one", b"second")
    assert store.get("ns/a/one") == b"second"
    store.put("ns/empty", b"")
    assert store.get("ns/empty") == b""


def test_put_if_absent_creates_once_and_keeps_the_first_content(store: ObjectStore) -> None:
    assert store.put_if_absent("ckpt/7/metadata", b"writer-1") is True
    assert store.put_if_absent("ckpt/7/metadata", b"writer-2") is False
    assert store.get("ckpt/7/metadata") == b"writer-1"


def test_put_if_absent_refuses_an_object_written_by_plain_put(store: ObjectStore) -> None:
    store.put("ckpt/8/metadata", b"plain")
    assert store.put_if_absent("ckpt/8/metadata", b"create") is False
    assert store.get("ckpt/8/metadata") == b"plain"


def test_racing_put_if_absent_has_exactly_one_winner(store: ObjectStore) -> None:
    writers = 6  # SeaweedFS makes contending creates wait in 1 s steps: keep the crowd small
    start = threading.Barrier(writers)

    def create(writer: int) -> bool:
        start.wait()
        return store.put_if_absent("ckpt/9/metadata", f"writer-{writer}".encode())

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(create, range(writers)))
    assert results.count(True) == 1
    assert store.get("ckpt/9/metadata") == f"writer-{results.index(True)}".encode()


def test_head_reports_key_size_and_a_recent_utc_time(store: ObjectStore) -> None:
    store.put("ns/sized", b"x" * 1234)
    meta = store.head("ns/sized")
    assert (meta.key, meta.size) == ("ns/sized", 1234)
    assert meta.last_modified.tzinfo is not None
    assert abs(datetime.now(timezone.utc) - meta.last_modified) < timedelta(minutes=5)


def test_list_by_prefix_matches_whole_segments(store: ObjectStore) -> None:
    for key in ("a/1", "a/b/2", "ab/3", "top"):
        store.put(key, key.encode())

    def keys(prefix: str) -> list[str]:
        return sorted(meta.key for meta in store.list(prefix))

    assert keys("a") == ["a/1", "a/b/2"]
    assert keys("a/") == ["a/1", "a/b/2"]
    assert keys("a/b") == ["a/b/2"]
    assert keys("") == ["a/1", "a/b/2", "ab/3", "top"]
    assert keys("nothing") == []
    assert {m.key: m.size for m in store.list("a")} == {"a/1": 3, "a/b/2": 5}


@pytest.mark.parametrize("read", [
    pytest.param(lambda s, _: s.get("no/such/key"), id="get"),
    pytest.param(lambda s, _: s.head("no/such/key"), id="head"),
    pytest.param(lambda s, path: s.get_to_file("no/such/key", path), id="get_to_file"),
])
def test_reading_a_missing_key_raises_object_not_found_naming_it(
    store: ObjectStore, tmp_path: Path, read: Callable[[ObjectStore, Path], object]
) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(ObjectNotFound) as caught:
        read(store, downloads / "file")
    assert caught.value.key == "no/such/key"
    assert "'no/such/key'" in str(caught.value)
    assert list(downloads.iterdir()) == []  # no partial download left behind


def test_delete_removes_and_tolerates_a_missing_key(store: ObjectStore) -> None:
    store.put("ns/gone", b"x")
    assert store.exists("ns/gone")
    store.delete("ns/gone")
    assert not store.exists("ns/gone")
    store.delete("ns/gone")
    store.delete("never/was")


def test_file_round_trip_reports_sizes_and_replaces_the_destination(store: ObjectStore, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    source = local / "000042.sst"
    source.write_bytes(b"sst-bytes" * 1000)
    assert store.put_file("ns/shared/000042.sst", source) == 9000
    dest = local / "restored.sst"
    dest.write_bytes(b"stale content")
    assert store.get_to_file("ns/shared/000042.sst", dest) == 9000
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in local.iterdir()) == ["000042.sst", "restored.sst"]


@pytest.mark.parametrize("key", ["", "/abs", "dir/", "a//b", "a/../b", "./a", "a#1", "a\\b", "a\nb"])
def test_invalid_keys_are_refused_before_any_io(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        store.put(key, b"x")
    with pytest.raises(InvalidObjectKey):
        store.get(key)


def test_object_meta_is_an_immutable_value() -> None:
    meta = ObjectMeta(key="k", size=1, last_modified=datetime(2024, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(AttributeError):
        meta.size = 2  # type: ignore[misc]


def test_store_url_fixture_opens_without_options(store_url: str) -> None:
    store = open_store(store_url)
    store.put("hello", b"world")
    assert open_store(store_url).get("hello") == b"world"

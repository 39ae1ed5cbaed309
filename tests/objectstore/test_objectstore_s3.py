"""S3 behaviour against the real SeaweedFS server: credentials, outages, buckets, prefixes."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from stateserver.store import (
    RetryingObjectStore,
    RetryPolicy,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
    open_store,
)
from support.seaweedfs import SeaweedS3


def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("wrong", ["secret_access_key", "access_key_id"])
def test_wrong_credentials_raise_access_denied_with_a_readable_message(seaweed: SeaweedS3, wrong: str) -> None:
    sleeps: list[float] = []
    options = {**seaweed.options, wrong: "not-the-right-one"}
    store = RetryingObjectStore(open_store(seaweed.fresh_url(), options=options), sleep=sleeps.append)
    with pytest.raises(StoreAccessDenied) as caught:
        store.put("ns/object", b"x")
    message = str(caught.value)
    assert "rejected the credentials" in message and "'ns/object'" in message
    assert "AWS_SECRET_ACCESS_KEY" in message
    assert "Debug source" not in message
    assert not caught.value.retriable and sleeps == []


def test_unreachable_endpoint_raises_unavailable_after_retries() -> None:
    sleeps: list[float] = []
    raw = open_store("s3://no-server-here", options={
        "endpoint": f"http://127.0.0.1:{_closed_loopback_port()}", "region": "us-east-1",
        "access_key_id": "k", "secret_access_key": "s", "max_retries": "0",
    })
    store = RetryingObjectStore(raw, policy=RetryPolicy(attempts=3, base_delay=0.01), sleep=sleeps.append)
    with pytest.raises(StoreUnavailable) as caught:
        store.get("ns/object")
    assert len(sleeps) == 2
    message = str(caught.value)
    assert "'ns/object'" in message and "unavailable" in message and "Connection refused" in message
    assert "gave up after 3 attempts" in message
    assert caught.value.retriable


def test_obstores_own_retries_also_end_in_unavailable() -> None:
    store = open_store("s3://no-server-here", options={
        "endpoint": f"http://127.0.0.1:{_closed_loopback_port()}", "access_key_id": "k",
        "secret_access_key": "s", "max_retries": "2", "retry_timeout": "5",
    })
    with pytest.raises(StoreUnavailable):
        store.put_if_absent("ns/object", b"x")
    with pytest.raises(StoreUnavailable):
        list(store.list("ns"))


def test_a_missing_bucket_is_a_plain_store_error_not_a_missing_object(seaweed: SeaweedS3) -> None:
    store = open_store("s3://no-such-bucket-here", options=seaweed.options)
    with pytest.raises(StoreError) as caught:
        store.get("ns/object")
    assert type(caught.value) is StoreError
    assert "bucket does not exist" in str(caught.value)


def test_prefixes_isolate_stores_in_one_bucket(seaweed: SeaweedS3) -> None:
    bucket_url = seaweed.create_bucket("prefix-isolation")
    left = open_store(f"{bucket_url}/left", options=seaweed.options)
    right = open_store(f"{bucket_url}/right", options=seaweed.options)
    left.put("k", b"left")
    right.put("k", b"right")
    assert (left.get("k"), right.get("k")) == (b"left", b"right")
    whole = open_store(bucket_url, options=seaweed.options)
    assert sorted(m.key for m in whole.list()) == ["left/k", "right/k"]


def test_environment_variables_configure_the_store(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", seaweed.region)
    store = open_store(seaweed.fresh_url())
    store.put("from-env", b"ok")
    assert store.get("from-env") == b"ok"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_blocking_calls_release_the_gil(silent_server: int) -> None:
    # Callers parallelize uploads with threads; that only works if obstore lets go of the GIL.
    store = open_store("s3://silent", options={
        "endpoint": f"http://127.0.0.1:{silent_server}", "access_key_id": "k",
        "secret_access_key": "s", "timeout": "500ms", "max_retries": "0",
    })
    stop = threading.Event()
    counted = [0]

    def count() -> None:
        while not stop.is_set():
            counted[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            store.get("k")
    finally:
        stop.set()
        counter.join()
    assert time.monotonic() - started >= 0.4
    assert counted[0] > 10_000  # a held GIL would have frozen the counter for the whole call

"""Store URLs and options: what opens, and the clear errors for what does not."""
from __future__ import annotations

from pathlib import Path

import pytest

from stateserver.store import InvalidStoreUrl, open_store
from stateserver.store._urls import StoreUrl, parse_store_url


@pytest.mark.parametrize(("url", "expected"), [
    ("file:///var/lib/state", StoreUrl(scheme="file", location="/var/lib/state")),
    ("file://localhost/var/lib/state/", StoreUrl(scheme="file", location="/var/lib/state")),
    ("file:///with%20space", StoreUrl(scheme="file", location="/with space")),
    ("s3://bucket", StoreUrl(scheme="s3", location="bucket")),
    ("s3://my.bucket-1/jobs/a/", StoreUrl(scheme="s3", location="my.bucket-1", prefix="jobs/a")),
    ("memory://", StoreUrl(scheme="memory", location="")),
    ("memory://shared-1", StoreUrl(scheme="memory", location="shared-1")),
])
def test_valid_urls_parse(url: str, expected: StoreUrl) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://x/y", "scheme 'ftp'"),
    ("s3://", "no bucket"),
    ("s3:///prefix", "no bucket"),
    ("file://relative/path", "must be absolute"),
    ("relative/path", "expected file:///abs/path"),
    ("", "expected file:///abs/path"),
    ("s3://Bad_Bucket", "not a valid bucket name"),
    ("s3://ab", "not a valid bucket name"),
    ("s3://key:secret@bucket", "options, not the URL"),
    ("s3://bucket?region=eu", "no query"),
    ("s3://bucket/a//b", "empty segment"),
    ("memory://a/b", "memory://name"),
])
def test_malformed_or_unsupported_urls_raise_invalid_store_url(url: str, says: str) -> None:
    with pytest.raises(InvalidStoreUrl, match=says):
        open_store(url)


def test_a_file_store_creates_its_directory(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "er"
    store = open_store(root.as_uri())
    store.put("a/b", b"x")
    assert (root / "a" / "b").read_bytes() == b"x"


def test_a_file_store_on_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(InvalidStoreUrl, match="cannot create the directory"):
        open_store(blocker.as_uri())


def test_local_and_memory_stores_take_no_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidStoreUrl, match="take no options"):
        open_store(tmp_path.as_uri(), options={"region": "x"})


def test_named_memory_stores_are_shared_and_anonymous_ones_are_not() -> None:
    open_store("memory://test-shared").put("k", b"v")
    assert open_store("memory://test-shared").get("k") == b"v"
    open_store("memory://").put("k", b"v")
    assert not open_store("memory://").exists("k")


@pytest.mark.parametrize(("options", "says"), [
    ({"no_such_option": "1"}, "no_such_option"),
    ({"endpoint": "http://example.com"}, "plain http"),
    ({"endpoint": "ftp://example.com"}, "not an http"),
    ({"allow_http": "perhaps"}, "not true or false"),
    ({"max_retries": "-1"}, "whole number"),
    ({"retry_timeout": "soon"}, "number of seconds"),
])
def test_bad_s3_options_raise_invalid_store_url(options: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidStoreUrl, match=says):
        open_store("s3://bucket", options=options)


def test_plain_http_is_allowed_on_loopback_or_when_asked() -> None:
    open_store("s3://bucket", options={"endpoint": "http://127.0.0.1:9000"})
    open_store("s3://bucket", options={"endpoint": "http://localhost:9000"})
    open_store("s3://bucket", options={"endpoint": "http://minio.internal:9000", "allow_http": "true"})


def test_urls_print_without_credentials() -> None:
    store = open_store("s3://bucket/pre", options={"secret_access_key": "hunter2", "access_key_id": "AK"})
    assert store.url == "s3://bucket/pre"
    assert "hunter2" not in repr(store)

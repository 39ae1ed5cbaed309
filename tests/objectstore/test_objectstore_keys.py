"""Object keys: one set of rules that every backend accepts."""
from __future__ import annotations

import pytest

from stateserver.store import InvalidObjectKey, check_key
from stateserver.store._keys import check_prefix


@pytest.mark.parametrize("key", ["a", "ns/shard-0001/shared/000042-1f3a.sst", "a b/c%d=e+f", "ü/x", "x" * 255])
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(("key", "says"), [
    ("", "empty"),
    ("/a", "starts with '/'"),
    ("a/", "ends with '/'"),
    ("a//b", "empty segment"),
    ("a/./b", "'.' segment"),
    ("../a", "'..' segment"),
    ("a#1", "'#'"),
    ("a\\b", "backslash"),
    ("a\tb", "control character"),
    ("x" * 256, "segment is longer"),
    ("a/" * 600 + "b", "longer than 1024 bytes"),
])
def test_invalid_keys_say_what_is_wrong(key: str, says: str) -> None:
    with pytest.raises(InvalidObjectKey, match=says) as caught:
        check_key(key)
    assert caught.value.key == key
    assert isinstance(caught.value, ValueError)


def test_prefixes_drop_a_trailing_slash_and_allow_empty() -> None:
    assert check_prefix("") == ""
    assert check_prefix("a/b/") == "a/b"
    with pytest.raises(InvalidObjectKey):
        check_prefix("/")
    with pytest.raises(InvalidObjectKey):
        check_prefix("a//b")

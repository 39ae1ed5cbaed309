"""Validation of object keys: the one place that says what a key may look like.

A key is a relative, '/'-separated path such as ``ns/shard-0003/shared/000042-ab12.sst``. The rules
are the intersection of what every backend accepts, so a key that works on ``memory://`` also works
on ``file://`` and ``s3://``.
"""
from __future__ import annotations

from ._errors import InvalidObjectKey

# S3's limit is 1024 bytes; local file systems limit a segment to 255 bytes.
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object key, else raise InvalidObjectKey."""
    problem = key_problem(key)
    if problem is not None:
        raise InvalidObjectKey(f"invalid object key {key!r}: {problem}", key=key)
    return key


def check_prefix(prefix: str) -> str:
    """Normalize a listing prefix: '' lists everything, a trailing '/' is optional."""
    stripped = prefix.rstrip("/")
    if stripped == "":
        if prefix != "":
            raise InvalidObjectKey(f"invalid prefix {prefix!r}: it is only slashes", key=prefix)
        return ""
    problem = key_problem(stripped)
    if problem is not None:
        raise InvalidObjectKey(f"invalid prefix {prefix!r}: {problem}", key=prefix)
    return stripped


def key_problem(key: str) -> str | None:
    """Say why ``key`` is not a valid object key, or return None if it is."""
    if not isinstance(key, str):
        return f"a key is a str, not {type(key).__name__}"
    if key == "":
        return "it is empty"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes"
    if key.startswith("/"):
        return "it starts with '/' (keys are relative to the store's root)"
    if key.endswith("/"):
        return "it ends with '/' (that names a directory, not an object)"
    if any(ord(c) < 0x20 or c == "\x7f" for c in key):
        return "it contains a control character"
    if "\\" in key:
        return "it contains a backslash"
    # The local backend writes 'name#N' staging files and refuses keys that look like them.
    if "#" in key:
        return "it contains '#'"
    for segment in key.split("/"):
        if segment == "":
            return "it has an empty segment ('//')"
        if segment in (".", ".."):
            return f"it has a {segment!r} segment"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return None

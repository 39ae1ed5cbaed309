"""Parsing store URLs into a ``StoreUrl`` value; no I/O and no library objects here.

    file:///abs/path          a directory on local disk (the embedded default)
    s3://bucket[/prefix]      an S3 bucket, optionally under a key prefix
    memory://[name]           in-process memory; a name is shared within the process
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from ._errors import InvalidStoreUrl
from ._keys import key_problem

Scheme = Literal["file", "s3", "memory"]

# The rules for new S3 buckets (3-63 characters of lowercase letters, digits, '.' and '-').
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MEMORY_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreUrl:
    """A validated store URL. ``location`` is the directory, bucket or memory name;
    ``prefix`` the key prefix inside an S3 bucket ('' for none)."""

    scheme: Scheme
    location: str
    prefix: str = ""

    def __str__(self) -> str:
        if self.scheme == "file":
            return "file://" + urllib.parse.quote(self.location)
        if self.scheme == "s3":
            return f"s3://{self.location}" + (f"/{self.prefix}" if self.prefix else "")
        return f"memory://{self.location}"


def parse_store_url(url: str) -> StoreUrl:
    """Validate ``url`` and split it; raise InvalidStoreUrl saying what is wrong."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidStoreUrl(
            f"invalid store URL {url!r}: expected file:///abs/path, s3://bucket[/prefix] or memory://",
            store=str(url),
        )
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise InvalidStoreUrl(
            f"invalid store URL {url!r}: no query or fragment allowed (pass settings as options)",
            store=url,
        )
    if parts.scheme == "file":
        return _parse_file(url, parts)
    if parts.scheme == "s3":
        return _parse_s3(url, parts)
    if parts.scheme == "memory":
        return _parse_memory(url, parts)
    raise InvalidStoreUrl(
        f"unsupported store URL {url!r}: the scheme {parts.scheme!r} is not one of file, s3, memory",
        store=url,
    )


def _parse_file(url: str, parts: urllib.parse.SplitResult) -> StoreUrl:
    if parts.netloc not in ("", "localhost"):
        raise InvalidStoreUrl(
            f"invalid file URL {url!r}: the path must be absolute, as in file:///abs/path "
            f"({parts.netloc!r} was read as a host name)",
            store=url,
        )
    path = urllib.parse.unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidStoreUrl(f"invalid file URL {url!r}: the path must be absolute", store=url)
    if "\x00" in path:
        raise InvalidStoreUrl(f"invalid file URL {url!r}: the path contains NUL", store=url)
    # Keep '/' itself as the root; strip a trailing slash elsewhere so equal URLs compare equal.
    return StoreUrl(scheme="file", location=path.rstrip("/") or "/")


def _parse_s3(url: str, parts: urllib.parse.SplitResult) -> StoreUrl:
    bucket = parts.netloc
    if bucket == "":
        raise InvalidStoreUrl(f"invalid S3 URL {url!r}: no bucket, expected s3://bucket[/prefix]", store=url)
    if "@" in bucket or ":" in bucket:
        raise InvalidStoreUrl(
            f"invalid S3 URL {url!r}: credentials and endpoints go in the options, not the URL",
            store=url,
        )
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidStoreUrl(f"invalid S3 URL {url!r}: {bucket!r} is not a valid bucket name", store=url)
    prefix = urllib.parse.unquote(parts.path).strip("/")
    if prefix:
        problem = key_problem(prefix)
        if problem is not None:
            raise InvalidStoreUrl(f"invalid S3 URL {url!r}: the prefix is invalid: {problem}", store=url)
    return StoreUrl(scheme="s3", location=bucket, prefix=prefix)


def _parse_memory(url: str, parts: urllib.parse.SplitResult) -> StoreUrl:
    name = parts.netloc
    if parts.path.strip("/"):
        raise InvalidStoreUrl(f"invalid memory URL {url!r}: expected memory:// or memory://name", store=url)
    if name and not _MEMORY_NAME.match(name):
        raise InvalidStoreUrl(f"invalid memory URL {url!r}: {name!r} is not a valid name", store=url)
    return StoreUrl(scheme="memory", location=name)

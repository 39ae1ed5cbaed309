"""Checksums of snapshot files: xxh3-128, fast enough to run over every byte uploaded."""
from __future__ import annotations

import os

import xxhash

_CHUNK = 1 << 20


def file_checksum(path: str | os.PathLike[str]) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_checksum(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)

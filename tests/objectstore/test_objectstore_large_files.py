"""A 20 MB file goes up in parts and comes back byte for byte, on local disk and on S3."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

from stateserver.store import open_store

SIZE = 20 * 1024 * 1024


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def test_large_file_round_trip_keeps_size_and_checksum(store_url: str, tmp_path: Path) -> None:
    source = tmp_path / "big.sst"
    source.write_bytes(random.Random(42).randbytes(SIZE))  # incompressible, and the same every run
    store = open_store(store_url)

    assert store.put_file("ns/shared/big.sst", source) == SIZE
    assert store.head("ns/shared/big.sst").size == SIZE
    restored = tmp_path / "restored.sst"
    assert store.get_to_file("ns/shared/big.sst", restored) == SIZE
    assert _sha256(restored) == _sha256(source)

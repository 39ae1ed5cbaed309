"""Read what a stopped node left in its data directory, straight from RocksDB (read-only).

For tests of what a node flushed to disk: the values of one value state of a namespace, over all
its shard directories, and each directory's clean-close record.
"""
from __future__ import annotations

import time
from pathlib import Path

import rocksdict

from stateserver.shard import clean_close

from stateserver.shard import layout
from stateserver.protocol.keygroups import KEY_GROUP_PREFIX_BYTES
from stateserver.shard.rocks import RocksResources, RocksTuning
from stateserver.protocol.states import StateDescriptor, StateKind


def shard_directories(data_dir: Path, namespace: str) -> list[Path]:
    """The namespace's shard directories on a node: in ``data_dir``, or with several workers in
    each worker's directory (``data_dir/worker-<i>``)."""
    found = [shards for root in [data_dir, *sorted(data_dir.glob("worker-*"))]
             if (shards := root / "namespaces" / namespace / "shards").is_dir()]
    if not found:
        raise FileNotFoundError(f"no shard directory of {namespace!r} under {data_dir}")
    return sorted(p for shards in found for p in shards.iterdir() if p.is_dir() and not p.name.startswith("."))


def stored_values(data_dir: Path, namespace: str, state: str) -> dict[bytes, bytes]:
    """Every live value of value state ``state``, by raw key, over the namespace's shard directories."""
    family_name = StateDescriptor(name=state, kind=StateKind.VALUE).column_family
    resources = RocksResources(RocksTuning(block_cache_bytes=4 << 20))
    now_ms = time.time_ns() // 1_000_000
    found: dict[bytes, bytes] = {}
    for path in shard_directories(data_dir, namespace):
        if family_name not in rocksdict.Rdict.list_cf(str(path)):
            continue
        db = resources.open_db(path, read_only=True)
        try:
            family = db.get_column_family(family_name)
            items = [(bytes(k), bytes(v)) for k, v in family.items()]
            del family  # views must go before the database closes
        finally:
            db.close()
        for stored_key, stored_value in items:
            payload = layout.decode_value(stored_value, now_ms)
            if payload is not None:
                found[stored_key[KEY_GROUP_PREFIX_BYTES:]] = payload
    return found


def clean_close_records(data_dir: Path, namespace: str) -> list[clean_close.CleanClose | None]:
    return [clean_close.read(path) for path in shard_directories(data_dir, namespace)]

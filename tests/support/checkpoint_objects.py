"""What checkpoints left in a snapshot store, and the CLI that verifies, restores and collects them.

    objects_by_checkpoint  every object ``stateserver.store.paths`` spells under a namespace, by the
                           checkpoint whose id its key carries (the checkpoint that wrote it)
    stateserver_cli        ``stateserver ...`` (the installed console script) in a subprocess that
                           inherits this process's environment (AWS_* for SeaweedFS included)
    restore_checkpoint     ``stateserver restore`` of one checkpoint into a fresh data directory
    restored_values        a restored shard's value state, read straight from its RocksDB, read-only

Reading RocksDB directly sees every stored entry, so a comparison with it catches extra keys
that reads of known keys through a node would miss.
"""
from __future__ import annotations

import collections
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import cast

from stateserver.shard import layout

from stateserver.store import paths
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectMeta, ObjectStore
from stateserver.node.shard_open import shard_directory
from stateserver.shard.rocks import RocksResources, RocksTuning
from stateserver.shard.shard import ShardId
from stateserver.protocol.states import StateDescriptor, StateKind

CLI_TIMEOUT_S = 120.0


def objects_by_checkpoint(store: ObjectStore, namespace: str) -> dict[int, list[ObjectMeta]]:
    """Shared and private files, shard manifests and metadata of ``namespace``, by checkpoint id."""
    found: dict[int, list[ObjectMeta]] = collections.defaultdict(list)
    for meta in store.list(namespace):
        parsed = paths.parse_key(meta.key)
        if parsed is not None and parsed.namespace == namespace:
            found[parsed.checkpoint_id].append(meta)
    return dict(found)


def stateserver_cli(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    script = pathlib.Path(sys.executable).with_name("stateserver")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "stateserver.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          stdin=subprocess.DEVNULL)


def store_args(url: str, namespace: str) -> list[str]:
    return ["--snapshot-url", url, "--namespace", namespace]


def restore_checkpoint(url: str, namespace: str, checkpoint_id: int, data_dir: pathlib.Path) -> float:
    """``stateserver restore`` into ``data_dir``; returns its wall time in seconds."""
    started = time.perf_counter()
    result = stateserver_cli("restore", *store_args(url, namespace), "--checkpoint", str(checkpoint_id),
                             "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return time.perf_counter() - started


def restored_values(data_dir: pathlib.Path, namespace: str, key_groups: str, state: str) -> dict[bytes, bytes]:
    """Every entry of a value state in a restored shard that no process has open: key -> value."""
    path = shard_directory(data_dir, ShardId(namespace, KeyGroupRange.parse(key_groups)))
    family_name = StateDescriptor(name=state, kind=StateKind.VALUE).column_family
    db = RocksResources(RocksTuning(block_cache_bytes=8 << 20)).open_db(path, read_only=True)
    try:
        family = db.get_column_family(family_name)
        now_ms = time.time_ns() // 1_000_000
        # Stored keys start with their two-byte key group; stored values with a header byte.
        items = cast(Iterable[tuple[bytes, bytes]], family.items())  # the database is opened in raw mode
        entries = {key[2:]: layout.decode_value(value, now_ms) for key, value in items}
        del family, items  # the view must go before the database closes
    finally:
        db.close()
    values = {key: value for key, value in entries.items() if value is not None}
    assert len(values) == len(entries), "a plain value state holds no expiring values"
    return values

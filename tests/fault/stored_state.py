"""Read every entry of every state of a restored data directory, straight from RocksDB.

Reading the databases directly sees every stored entry, so extra keys (a write that should not
be there) show up as well as missing ones. The result has the model's shape (``model.State``).
"""
from __future__ import annotations

import json
import pathlib
import struct
import time
from typing import Any

import rocksdict

from fault.model import STATES, State
from stateserver.shard import layout
from stateserver.protocol import merge_operators
from stateserver.protocol import wire
from stateserver.shard.rocks import RocksResources, RocksTuning
from stateserver.protocol.states import StateDescriptor, StateKind

_U32_BE = struct.Struct(">I")
_KIND = {"value": StateKind.VALUE, "list": StateKind.LIST, "map": StateKind.MAP, "aggregating": StateKind.AGGREGATING}


def read_data_dir(data_dir: pathlib.Path, namespace: str) -> State:
    state: State = {}
    shards = data_dir / "namespaces" / namespace / "shards"
    resources = RocksResources(RocksTuning(block_cache_bytes=4 << 20))
    for path in sorted(p for p in shards.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _read_shard(path, resources, state)
    return {name: entries for name, entries in state.items() if entries}


def _read_shard(path: pathlib.Path, resources: RocksResources, state: State) -> None:
    families = set(rocksdict.Rdict.list_cf(str(path)))
    db = resources.open_db(path, read_only=True)
    try:
        now_ms = time.time_ns() // 1_000_000
        for name, (kind, operator) in STATES.items():
            family_name = StateDescriptor(name=name, kind=_KIND[kind], merge_operator=operator).column_family
            if family_name not in families:
                continue
            family = db.get_column_family(family_name)
            items = [(bytes(k), bytes(v)) for k, v in family.items()]
            del family
            entries = state.setdefault(name, {})
            for stored_key, stored_value in items:
                payload = layout.decode_value(stored_value, now_ms)
                if payload is None:
                    continue
                _add(entries, kind, operator, stored_key[2:], payload)
    finally:
        db.close()


def _add(entries: dict[str, Any], kind: str, operator: str, key: bytes, payload: bytes) -> None:
    if kind in ("value", "aggregating"):
        if operator.endswith("_int64"):
            value: Any = merge_operators.decode_int64(payload)
        elif operator == "list_append":
            value = [json.loads(element) for element in wire.unpack_list(payload)]
        else:
            value = json.loads(payload)
        entries[key.decode()] = value
        return
    (length,) = _U32_BE.unpack_from(key)
    user_key = key[4 : 4 + length].decode()
    rest = key[4 + length :]
    if kind == "list":
        entries.setdefault(user_key, []).append(json.loads(payload))  # positions ascend in key order
    else:
        entries.setdefault(user_key, {})[rest.decode()] = json.loads(payload)

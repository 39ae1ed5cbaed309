"""The clean-close record of a shard directory: the proof that it may be served as it is.

A local shard directory is a cache of object storage (DESIGN.md invariant 8). Without the
write-ahead log (the default) a crash loses memtables, so a directory left by a crash is torn:
one acknowledged batch may be half there. A graceful close flushes the memtables and then
writes ``STATESERVER-CLEAN.json`` into the directory (file and directory fsynced):

    {"namespace": ..., "key_groups": "0-63", "epoch": 5, "owner_id": "...", "restored_from": null}

Opening the directory deletes the record (directory fsynced) before the shard serves anything,
so a directory without one is dirty and is never opened as it is: the writer must restore.
``stateserver restore`` writes a record with ``owner_id`` null and ``restored_from`` set: the
directory is exactly that checkpoint and no writer has owned it yet, so the first writer may
take it as it is.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store.durable_files import sync_directory

RECORD_NAME = "STATESERVER-CLEAN.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CleanClose:
    namespace: str
    key_groups: KeyGroupRange
    epoch: int | None
    owner_id: str | None  # None: restored by `stateserver restore`, not owned by any writer yet
    restored_from: int | None = None

    def to_json(self) -> bytes:
        return json.dumps({"namespace": self.namespace, "key_groups": str(self.key_groups), "epoch": self.epoch,
                           "owner_id": self.owner_id, "restored_from": self.restored_from}, sort_keys=True).encode()


def read(directory: pathlib.Path) -> CleanClose | None:
    """The directory's record; None when it has none (or one that cannot be read: dirty too)."""
    try:
        fields = json.loads((directory / RECORD_NAME).read_bytes())
        return CleanClose(namespace=str(fields["namespace"]), key_groups=KeyGroupRange.parse(fields["key_groups"]),
                          epoch=fields["epoch"], owner_id=fields["owner_id"], restored_from=fields.get("restored_from"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(directory: pathlib.Path, record: CleanClose) -> None:
    """Write the record durably: a temporary file, fsynced, renamed, the directory fsynced."""
    temporary = directory / f".{RECORD_NAME}.tmp"
    with open(temporary, "wb") as file:
        file.write(record.to_json())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, directory / RECORD_NAME)
    sync_directory(directory)


def remove(directory: pathlib.Path) -> None:
    """Make the directory dirty again, durably, before anything is written into it."""
    try:
        (directory / RECORD_NAME).unlink()
    except FileNotFoundError:
        return
    sync_directory(directory)

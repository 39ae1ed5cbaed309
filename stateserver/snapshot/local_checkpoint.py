"""The sync phase: a RocksDB checkpoint of the shard, made of hard links, in milliseconds.

RocksDB flushes the memtables into the checkpoint (the write-ahead log is off), so the
checkpoint holds every write acknowledged before it, and none after.
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
import uuid

import rocksdict

from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.shard.shard import Shard
from stateserver.protocol.states import StateDescriptor


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalCheckpoint:
    namespace: str
    key_groups: KeyGroupRange
    max_key_groups: int
    checkpoint_id: int
    epoch: int
    states: tuple[StateDescriptor, ...]
    directory: pathlib.Path
    sync_seconds: float
    changes: int = 0  # the shard's write turns at the cut (Shard.changes)

    def files(self) -> list[pathlib.Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def release(self) -> None:
        """Drop the hard links; the shard's own files are untouched."""
        shutil.rmtree(self.directory, ignore_errors=True)


def take_local_checkpoint(shard: Shard, checkpoint_id: int, epoch: int, work_dir: pathlib.Path) -> LocalCheckpoint:
    work_dir.mkdir(parents=True, exist_ok=True)
    directory = work_dir / f"{checkpoint_id}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    with shard.write_lock:  # no batch lands half before, half after the cut
        shard.check_writer(epoch)
        shard.check_session()  # a failed session's state is not a prefix of what the writer wrote
        rocksdict.Checkpoint(shard.db).create_checkpoint(str(directory))
        states = tuple(state.descriptor for state in shard.states.values())
        changes = shard.changes
    return LocalCheckpoint(
        namespace=shard.id.namespace, key_groups=shard.key_groups, max_key_groups=shard.max_key_groups,
        checkpoint_id=checkpoint_id, epoch=epoch, states=states, directory=directory,
        sync_seconds=time.perf_counter() - started, changes=changes,
    )

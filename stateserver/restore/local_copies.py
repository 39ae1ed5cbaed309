"""Local recovery (Flink's ``state.backend.local-recovery``): restore a shard from a copy this node
already holds of exactly the checkpoint asked for, by hard links, instead of downloading it.

A node keeps, per shard (namespace and key-group range), one retained copy: the files of the
shard's last checkpoint that was committed and confirmed here (its sync phase's hard links), or of
the checkpoint the shard was last restored from. A restore of exactly that checkpoint, namespace
and range builds the shard's directory by linking the retained SSTs (immutable) and copying its
few small private files (MANIFEST, CURRENT, OPTIONS: RocksDB must never write into a retained
file), then checks every file against the committed manifest, names, sizes and xxh3-128
checksums, before the copy may be used: a local directory is a cache of object storage
(invariant 8), so a copy that differs in any way is dropped and the restore downloads instead.

Bounded disk: a newer retained copy of a shard replaces the older one, and a shard closed or
moved away from the node loses its copy (``drop``). The index lives in memory; what a crash left
under ``root`` is removed when the next process starts.

    root/<uuid>/        one retained copy (its index entry names namespace, range and checkpoint)
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shutil
import threading
import uuid

from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.shard.directory_removal import remove_later
from stateserver.store.checksums import file_checksum

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Retained:
    checkpoint_id: int
    directory: pathlib.Path


class LocalCopies:
    """The retained copies of one node's shards, under ``root`` (on the data directory's file
    system, so that links work). Thread-safe."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        shutil.rmtree(root, ignore_errors=True)  # a former process's copies: nothing indexes them
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._copies: dict[tuple[str, KeyGroupRange], _Retained] = {}
        self.used = 0  # restores built from a retained copy
        self.rejected = 0  # retained copies that differed from the committed manifest

    # -- keeping copies ---------------------------------------------------------------------

    def retain(self, namespace: str, key_groups: KeyGroupRange, checkpoint_id: int, directory: pathlib.Path) -> None:
        """Keep ``directory`` (it is moved under ``root``; the caller lets go of it) as the copy of
        ``checkpoint_id`` of the shard, unless a copy of a newer checkpoint is kept already."""
        kept = self.root / uuid.uuid4().hex
        try:
            os.rename(directory, kept)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
            return
        self._keep(namespace, key_groups, _Retained(checkpoint_id, kept))

    def retain_links_of(self, handle: cpb.ShardSnapshotHandle, directory: pathlib.Path) -> None:
        """Keep a copy of ``directory``, a shard just built from ``handle``'s files (before it opens)."""
        kept = self.root / uuid.uuid4().hex
        try:
            _link_or_copy(directory, kept, [f.local_name for f in (*handle.shared_files, *handle.private_files)])
        except OSError:
            shutil.rmtree(kept, ignore_errors=True)
            return
        self._keep(handle.namespace, KeyGroupRange(handle.key_group_start, handle.key_group_end),
                   _Retained(handle.checkpoint_id, kept))

    def _keep(self, namespace: str, key_groups: KeyGroupRange, retained: _Retained) -> None:
        with self._lock:
            current = self._copies.get((namespace, key_groups))
            if current is not None and current.checkpoint_id > retained.checkpoint_id:
                stale = retained.directory
            else:
                self._copies[(namespace, key_groups)] = retained
                stale = current.directory if current is not None else None
        if stale is not None:
            _remove(stale)

    def drop(self, namespace: str, key_groups: KeyGroupRange) -> None:
        """The shard closed or moved away: its copy goes."""
        with self._lock:
            retained = self._copies.pop((namespace, key_groups), None)
        if retained is not None:
            _remove(retained.directory)

    def held(self, namespace: str) -> dict[KeyGroupRange, int]:
        """The ranges of ``namespace`` with a retained copy, and its checkpoint id."""
        with self._lock:
            return {r: c.checkpoint_id for (ns, r), c in self._copies.items() if ns == namespace}

    # -- restoring from them ------------------------------------------------------------------

    def restore(self, handle: cpb.ShardSnapshotHandle, target: pathlib.Path) -> bool:
        """Build ``target`` (which must not exist) from the retained copy of exactly ``handle``'s
        checkpoint, namespace and range; False (and nothing at ``target``) when there is none or
        it differs from ``handle`` in any file."""
        key = (handle.namespace, KeyGroupRange(handle.key_group_start, handle.key_group_end))
        files = [*handle.shared_files, *handle.private_files]
        with self._lock:  # a drop cannot remove the copy halfway through the links
            retained = self._copies.get(key)
            if retained is None or retained.checkpoint_id != handle.checkpoint_id:
                return False
            try:
                found = sorted(p.name for p in retained.directory.iterdir())
                _link_or_copy(retained.directory, target, [f.local_name for f in files])
            except OSError as exc:
                found, problem = [], f"unreadable: {exc}"
            else:
                problem = ""
        if not problem:
            problem = _difference(target, files, found)
        if not problem:
            with self._lock:
                self.used += 1
            return True
        shutil.rmtree(target, ignore_errors=True)
        with self._lock:
            self.rejected += 1
            if self._copies.get(key) is retained:
                del self._copies[key]
        _remove(retained.directory)
        log.warning("retained local copy not used", extra={"namespace": handle.namespace, "shard": str(key[1]),
                                                           "checkpoint": handle.checkpoint_id, "problem": problem})
        return False


def _difference(directory: pathlib.Path, files: list[cpb.StoredFile], found: list[str]) -> str:
    """What makes ``directory`` differ from the manifest's ``files`` ('' if nothing)."""
    expected = sorted(f.local_name for f in files)
    if found != expected:
        return f"its files {found[:8]} are not the manifest's {expected[:8]}"
    for stored in files:
        path = directory / stored.local_name
        size = path.stat().st_size
        if size != stored.size:
            return f"{stored.local_name} has {size} bytes, the manifest says {stored.size}"
        if file_checksum(path) != stored.checksum:
            return f"{stored.local_name}'s checksum differs from the manifest's"
    return ""


def _link_or_copy(source: pathlib.Path, target: pathlib.Path, names: list[str]) -> None:
    """``target`` made with ``names`` of ``source``: SSTs (immutable) linked, the rest copied."""
    target.mkdir(parents=True)
    for name in names:
        if name.endswith(".sst"):
            os.link(source / name, target / name)
        else:
            shutil.copyfile(source / name, target / name)


def _remove(directory: pathlib.Path) -> None:
    """Rename first, so a half-removed copy is never found under its name; remove in the background."""
    gone = directory.with_name(f".{directory.name}.removing")
    try:
        os.rename(directory, gone)
    except OSError:
        return
    remove_later(gone)

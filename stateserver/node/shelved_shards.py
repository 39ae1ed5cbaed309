"""Shards in a supervised node's own data directory, which its workers adopt.

A node of N workers keeps each worker's shards in ``<data_dir>/worker-<i>``; the node's data
directory itself holds the single-process layout: what ``stateserver restore --data-dir`` wrote, or
what the node kept while it ran as one process. Which worker serves a shard follows from placement,
known only once clients route to it, so the shard stays on this shelf until a writer opens it
on a worker: then that worker takes it by renaming the directory into its own (atomic: two workers
cannot both take it). Until then it is never silently ignored: a writer resuming key groups that
a shelved shard overlaps without matching hears RestoreRequired, never an empty shard; so does one
whose worker holds a copy of its own (from an earlier run with workers) while the shelf holds
another (from a run as one process): which one is newer cannot be told from the directories. A
writer that opens the key groups from a checkpoint or empty on a worker makes the shelved copies
older owners' copies, which are discarded, as the worker discards its own.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib

from stateserver.protocol.errors import RestoreRequired
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.shard.directory_removal import discard_later
from stateserver.shard.shard import ShardId

log = logging.getLogger(__name__)


class ShardShelf:
    def __init__(self, node_dir: pathlib.Path) -> None:
        self.node_dir = node_dir

    def namespaces(self) -> dict[str, int]:
        """Namespaces the shelf defines, with their key groups."""
        found = {}
        for path in sorted((self.node_dir / "namespaces").glob("*/namespace.json")):
            try:
                found[path.parent.name] = int(json.loads(path.read_text())["max_key_groups"])
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable namespace definition on the node's shelf", extra={"path": str(path)})
        return found

    def take(self, shard_id: ShardId, destination: pathlib.Path) -> bool:
        """Move the shelved shard with exactly these key groups to ``destination``; False if there is
        none. RestoreRequired if shelved shards overlap the key groups without matching them, or if
        the worker holds its own copy at ``destination`` and the shelf holds one too."""
        shelved = self._overlapping(shard_id)
        if shelved and destination.exists():
            raise RestoreRequired(
                f"shard {shard_id} has a copy in this worker's data directory and the node's data directory "
                f"holds another of overlapping key groups ({', '.join(str(p) for _, p in shelved)}); which is "
                "newer cannot be told: open these key groups with restore='latest' or a checkpoint id")
        exact = [path for key_groups, path in shelved if key_groups == shard_id.key_groups]
        others = [path for key_groups, path in shelved if key_groups != shard_id.key_groups]
        if others:
            raise RestoreRequired(
                f"the node's data directory holds shard directories of key groups overlapping {shard_id} "
                f"({', '.join(str(p) for p in others)}) that no worker has taken; open these key groups "
                "as they were restored, or with restore='latest' or a checkpoint id")
        if not exact:
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(exact[0], destination)
        except FileNotFoundError:
            return False  # another worker took it first
        log.info("took a shard from the node's shelf", extra={"shard": str(shard_id), "from": str(exact[0])})
        return True

    def discard(self, shard_id: ShardId) -> list[pathlib.Path]:
        """Remove the shelved shards overlapping ``shard_id`` (a writer opened these key groups from
        a checkpoint or empty: they are older owners' copies); returns what was removed."""
        removed = []
        for _, path in self._overlapping(shard_id):
            if not discard_later(path):
                continue  # another worker took or discarded it meanwhile
            removed.append(path)
            log.info("discarded a shard on the node's shelf", extra={"shard": str(shard_id), "path": str(path)})
        return removed

    def _overlapping(self, shard_id: ShardId) -> list[tuple[KeyGroupRange, pathlib.Path]]:
        shards_dir = self.node_dir / "namespaces" / shard_id.namespace / "shards"
        if not shards_dir.is_dir():
            return []
        found = []
        for path in shards_dir.iterdir():
            try:
                key_groups = KeyGroupRange.parse(path.name)
            except ValueError:
                continue  # hidden build directories and anything else that is not a shard
            if key_groups.overlaps(shard_id.key_groups):
                found.append((key_groups, path))
        return found

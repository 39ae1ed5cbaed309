"""Shards in a supervised node's own data directory, which its workers adopt.

A node of N workers keeps each worker's shards in ``<data_dir>/worker-<i>``; the node's data
directory itself holds the single-process layout: what ``stateserver restore --data-dir`` wrote, or
what the node kept while it ran as one process. Which worker serves a shard follows from placement,
known only once clients route to it, so the shard stays on this shelf until a writer opens it
on a worker: then that worker takes it by renaming the directory into its own (atomic: two workers
cannot both take it). Until then it is never silently ignored: a writer resuming key groups that
a shelved shard overlaps without matching hears RestoreRequired, never an empty shard.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib

from stateserver.protocol.errors import RestoreRequired
from stateserver.protocol.keygroups import KeyGroupRange
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
        none. RestoreRequired if shelved shards overlap the key groups without matching them."""
        shelved = self._overlapping(shard_id)
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

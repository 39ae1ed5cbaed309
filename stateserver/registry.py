"""The node's namespaces and open shards, laid out under its data directory.

    <data-dir>/namespaces/<namespace>/namespace.json           {"max_key_groups": N}
    <data-dir>/namespaces/<namespace>/shards/<start>-<end>/     one RocksDB per shard
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from stateserver.errors import AlreadyExists, Fenced, InvalidInput, NotFound, ShardClosed, ShardNotOpen
from stateserver.keygroups import MAX_KEY_GROUPS_LIMIT, KeyGroupRange
from stateserver.limits import Limits
from stateserver.names import check_name
from stateserver.rocks import RocksResources
from stateserver.shard import Clock, Shard, ShardId, wall_clock_ms
from stateserver.states import StateDescriptor

log = logging.getLogger(__name__)

# Builds a shard's directory at the given path from a checkpoint; returns what it restored.
Restorer = Callable[[ShardId, pathlib.Path], Any]


def shard_directory(data_dir: pathlib.Path, shard_id: ShardId) -> pathlib.Path:
    return data_dir / "namespaces" / shard_id.namespace / "shards" / str(shard_id.key_groups)


class ShardRegistry:
    def __init__(self, data_dir: pathlib.Path, resources: RocksResources, limits: Limits, clock: Clock = wall_clock_ms) -> None:
        self.data_dir = data_dir
        self.resources = resources
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._max_key_groups: dict[str, int] = {}
        self._shards: dict[tuple[str, int, int], Shard] = {}
        # Shards being built (restored, opened) or closed outside the lock, so that a long restore
        # holds up neither other shards' opens nor scrapes; opens overlapping one of them wait for it.
        self._building: set[ShardId] = set()
        self._built = threading.Condition(self._lock)
        # Told about every shard opened from a checkpoint, with the restorer's result.
        self.on_restored: Callable[[Shard, Any], None] | None = None
        for path in sorted((data_dir / "namespaces").glob("*/namespace.json")):
            self._max_key_groups[path.parent.name] = json.loads(path.read_text())["max_key_groups"]

    # -- namespaces --------------------------------------------------------------------

    def create_namespace(self, name: str, max_key_groups: int) -> bool:
        """Create ``name``; True if created, False if it existed with the same key groups."""
        _valid_name("namespace", name)
        if max_key_groups == 0:
            self.max_key_groups(name)  # a lookup: NotFound if missing
            return False
        if not 0 < max_key_groups <= MAX_KEY_GROUPS_LIMIT:
            raise InvalidInput(f"max_key_groups must be 1..{MAX_KEY_GROUPS_LIMIT}, got {max_key_groups}")
        with self._lock:
            existing = self._max_key_groups.get(name)
            if existing is not None:
                if existing != max_key_groups:
                    raise AlreadyExists(f"namespace {name!r} exists with {existing} key groups, not {max_key_groups}")
                return False
            directory = self.data_dir / "namespaces" / name
            directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(directory / "namespace.json", json.dumps({"max_key_groups": max_key_groups}).encode())
            self._max_key_groups[name] = max_key_groups
            log.info("namespace created", extra={"namespace": name, "max_key_groups": max_key_groups})
            return True

    def max_key_groups(self, namespace: str) -> int:
        try:
            return self._max_key_groups[namespace]
        except KeyError:
            _valid_name("namespace", namespace)
            raise NotFound(f"namespace {namespace!r} does not exist; create it first") from None

    # -- shards --------------------------------------------------------------------------

    def key_groups_of(self, namespace: str, start: int, end: int) -> KeyGroupRange:
        """The shard's key groups, checked against the namespace (NotFound, InvalidInput)."""
        return _range(start, end, self.max_key_groups(namespace))

    def open_shard(self, namespace: str, start: int, end: int, epoch: int, states: Iterable[StateDescriptor],
                   restore: Restorer | None = None) -> Shard:
        """Open a shard as the writer at ``epoch``; with ``restore``, replace its state first.

        Open shards of the namespace whose key groups overlap belong to an older writer (the
        job changed parallelism or failed over): a newer epoch closes them, fencing them out.
        """
        max_key_groups = self.max_key_groups(namespace)
        key_groups = _range(start, end, max_key_groups)
        shard_id = ShardId(namespace, key_groups)
        with self._lock:
            while any(shard_id.key_groups.overlaps(other.key_groups)
                      for other in self._building if other.namespace == namespace):
                self._built.wait()
            shard = self._shards.get((namespace, start, end))
            build = shard is None or restore is not None  # else reopened by a writer: ownership below
            if build:
                self._take_over(shard_id, epoch)
                self._building.add(shard_id)
        if build:
            built: Shard | None = None
            try:
                built = self._build(shard_id, max_key_groups, epoch, restore)
            finally:
                with self._lock:
                    self._building.discard(shard_id)
                    if built is not None:
                        self._shards[(namespace, start, end)] = built
                    self._built.notify_all()
            shard = built
        assert shard is not None
        shard.take_ownership(epoch)
        shard.declare_states(states)
        return shard

    def _build(self, shard_id: ShardId, max_key_groups: int, epoch: int, restore: Restorer | None) -> Shard:
        path = shard_directory(self.data_dir, shard_id)
        result = restore(shard_id, path) if restore is not None else None
        shard = Shard(shard_id=shard_id, max_key_groups=max_key_groups, path=path,
                      resources=self.resources, limits=self.limits, clock=self.clock)
        if result is not None:
            shard.reset_epoch(epoch)  # the restored record is the old writer's epoch
            if self.on_restored is not None:
                self.on_restored(shard, result)
        log.info("shard opened", extra={"namespace": shard_id.namespace, "shard": str(shard_id), "epoch": epoch,
                                        "restored": result is not None})
        return shard

    def _take_over(self, shard_id: ShardId, epoch: int) -> None:
        """Close the open shards overlapping ``shard_id``, unless one has a newer writer."""
        overlapping = [(k, s) for k, s in self._shards.items()
                       if k[0] == shard_id.namespace and shard_id.key_groups.overlaps(s.key_groups)]
        for _key, other in overlapping:
            if other.epoch > epoch:
                raise Fenced(f"shard {other.id} is owned by epoch {other.epoch}; epoch {epoch} is stale")
        for key, other in overlapping:
            del self._shards[key]
            other.close()  # waits for its requests in flight: none of them takes this lock
            log.info("shard closed for a newer writer", extra={"namespace": shard_id.namespace, "shard": str(other.id)})
        path = shard_directory(self.data_dir, shard_id)
        if not overlapping and (path / "CURRENT").exists():
            stored = Shard.stored_epoch(path, self.resources)
            if stored > epoch:
                raise Fenced(f"shard {shard_id} is owned by epoch {stored}; epoch {epoch} is stale")

    def shard(self, namespace: str, start: int, end: int, epoch: int) -> Shard:
        """The open shard for a request, after checking the writer's epoch."""
        shard = self._shards.get((namespace, start, end))
        if shard is None:
            self.max_key_groups(namespace)  # NotFound for an unknown namespace
            # tuple(): a copy taken at once (under the GIL), not an iteration the lock must guard
            if any(b.namespace == namespace and (b.key_groups.start, b.key_groups.end) == (start, end)
                   for b in tuple(self._building)):
                raise ShardClosed(f"shard {namespace}/{start}-{end} is being opened or closed on this node; retry "
                                  f"shortly, or reopen it (OpenShard) if it was closed")
            raise ShardNotOpen(f"shard {namespace}/{start}-{end} is not open on this node; open it first")
        shard.check_writer(epoch)
        return shard

    def open_epoch(self, namespace: str, start: int, end: int) -> int | None:
        """The epoch of the open shard with exactly these key groups, or None."""
        shard = self._shards.get((namespace, start, end))
        return shard.epoch if shard is not None else None

    def close_shard(self, namespace: str, start: int, end: int, epoch: int) -> None:
        key = (namespace, start, end)
        shard = self.shard(namespace, start, end, epoch)
        with self._lock:
            if self._shards.get(key) is not shard:  # closed or replaced meanwhile
                raise ShardClosed(f"shard {shard.id} was closed meanwhile; reopen it (OpenShard) and retry")
            del self._shards[key]
            # Opens of these key groups wait until the close released the directory, and its
            # requests meanwhile hear that it is closing.
            self._building.add(shard.id)
        try:
            shard.close()  # outside the lock: it waits for the shard's requests in flight
        finally:
            with self._lock:
                self._building.discard(shard.id)
                self._built.notify_all()
        log.info("shard closed", extra={"namespace": namespace, "shard": str(shard.id)})

    def open_shards(self) -> list[Shard]:
        with self._lock:
            return list(self._shards.values())

    def close_all(self) -> int:
        """Close every open shard, going on past failures (each is logged); how many failed."""
        with self._lock:
            while self._building:  # a shard being restored is closed once it is built
                self._built.wait()
            shards, self._shards = list(self._shards.values()), {}
        failed = 0
        for shard in shards:
            fields = {"namespace": shard.id.namespace, "shard": str(shard.id)}
            try:
                shard.close()
            except Exception:
                failed += 1
                log.exception("shard close failed", extra=fields)
            else:
                if shard.broken is not None:  # released, but its writes since the last flush are lost
                    failed += 1
                log.info("shard closed", extra=fields)
        return failed


def _range(start: int, end: int, max_key_groups: int) -> KeyGroupRange:
    if not 0 <= start <= end < max_key_groups:
        raise InvalidInput(f"key-group range {start}-{end} is not within 0-{max_key_groups - 1}")
    return KeyGroupRange(start, end)


def _valid_name(kind: str, name: str) -> str:
    try:
        return check_name(kind, name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)

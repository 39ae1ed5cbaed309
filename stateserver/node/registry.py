"""The node's namespaces and open shards, laid out under its data directory.

    <data-dir>/namespaces/<namespace>/namespace.json           {"max_key_groups": N}
    <data-dir>/namespaces/<namespace>/shards/<start>-<end>/     one RocksDB per shard
    <data-dir>/namespaces/<namespace>/shards/.<range>.restoring-*, .replaced-*   swept at start

The registry keeps the table of open shards and the namespaces; how a shard is opened (resume,
empty, restore, ownership claim) is ``shard_open``.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import threading
from collections.abc import Callable, Iterable
from typing import Any

from stateserver.node.fence_records import FenceRecords
from stateserver.node.namespace_records import NamespaceRecords
from stateserver.node.open_phases import OpenPhases, PhaseObserver
from stateserver.node.shard_open import NO_CLAIMS, RESUME, OpenSource, OwnerClaims, ShardOpening, shard_directory
from stateserver.node.shelved_shards import ShardShelf
from stateserver.protocol.epochs import epoch_problem
from stateserver.protocol.errors import AlreadyExists, Fenced, InvalidInput, NotFound, ShardClosed, ShardNotOpen
from stateserver.protocol.keygroups import MAX_KEY_GROUPS_LIMIT, KeyGroupRange
from stateserver.protocol.limits import Limits
from stateserver.protocol.names import check_name
from stateserver.protocol.states import StateDescriptor
from stateserver.shard import clean_close
from stateserver.shard.directory_removal import discard_later
from stateserver.shard.rocks import RocksResources
from stateserver.shard.shard import Clock, Shard, ShardId, wall_clock_ms

log = logging.getLogger(__name__)


class ShardRegistry(ShardOpening):
    def __init__(self, data_dir: pathlib.Path, resources: RocksResources, limits: Limits, clock: Clock = wall_clock_ms,
                 *, shelf: ShardShelf | None = None) -> None:
        self.data_dir = data_dir
        self.shelf = shelf  # a worker's: the shards in its node's own data directory (see ShardShelf)
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
        # Told about every shard that starts a new lineage of files: opened from a checkpoint (with
        # the restorer's result), empty or new (None). A resumed shard keeps its lineage.
        self.on_restored: Callable[[Shard, Any], None] | None = None
        # Told about key groups that left this node (closed, or rescaled away by a newer writer).
        self.on_discarded: Callable[[ShardId], None] | None = None
        # Told where each successful open spent its time (node.open_phases).
        self.on_open_phases: PhaseObserver | None = None
        # The snapshot store's namespace definitions (the node's namespace.json files cache them).
        self.namespace_records: NamespaceRecords | None = None
        # Key groups newer writers opened on other members of the cluster (``fence_older``).
        self.fences = FenceRecords()
        for swept in sweep_leftovers(data_dir):
            log.info("removed what a crash left", extra={"path": str(swept)})
        for path in sorted((data_dir / "namespaces").glob("*/namespace.json")):
            self._max_key_groups[path.parent.name] = json.loads(path.read_text())["max_key_groups"]
        for name, max_key_groups in (shelf.namespaces() if shelf is not None else {}).items():
            if name not in self._max_key_groups:
                self._remember(name, max_key_groups)

    # -- namespaces --------------------------------------------------------------------

    def create_namespace(self, name: str, max_key_groups: int) -> bool:
        """Create ``name``; True if created, False if it existed with the same key groups."""
        _valid_name("namespace", name)
        if max_key_groups == 0:
            self.max_key_groups(name)  # a lookup: NotFound if missing
            return False
        if not 0 < max_key_groups <= MAX_KEY_GROUPS_LIMIT:
            raise InvalidInput(f"max_key_groups must be 1..{MAX_KEY_GROUPS_LIMIT}, got {max_key_groups}")
        existing = self._max_key_groups.get(name)
        if existing is None:
            existing = self._learn(name)
        if existing is not None:
            if existing != max_key_groups:
                raise AlreadyExists(f"namespace {name!r} exists with {existing} key groups, not {max_key_groups}")
            return False
        if self.namespace_records is not None:  # refused if another node recorded other key groups meanwhile
            self.namespace_records.record(name, max_key_groups)
        with self._lock:
            existing = self._max_key_groups.get(name)
            if existing is not None:
                if existing != max_key_groups:
                    raise AlreadyExists(f"namespace {name!r} exists with {existing} key groups, not {max_key_groups}")
                return False
            self._remember(name, max_key_groups)
            log.info("namespace created", extra={"namespace": name, "max_key_groups": max_key_groups})
            return True

    def _remember(self, name: str, max_key_groups: int) -> None:
        """Write the namespace's definition into this data directory and know it (under the lock,
        once the registry serves)."""
        directory = self.data_dir / "namespaces" / name
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(directory / "namespace.json", json.dumps({"max_key_groups": max_key_groups}).encode())
        self._max_key_groups[name] = max_key_groups

    def known_namespaces(self) -> dict[str, int]:
        """Every namespace this node knows, with its key groups."""
        with self._lock:
            return dict(self._max_key_groups)

    def max_key_groups(self, namespace: str) -> int:
        try:
            return self._max_key_groups[namespace]
        except KeyError:
            _valid_name("namespace", namespace)
        learnt = self._learn(namespace)
        if learnt is None:
            raise NotFound(f"namespace {namespace!r} does not exist; create it first")
        return learnt

    def _learn(self, name: str) -> int | None:
        """The namespace's key groups from the snapshot store, kept here too; None if not recorded."""
        if self.namespace_records is None:
            return None
        recorded = self.namespace_records.lookup(name)
        if recorded is None:
            return None
        with self._lock:
            if name not in self._max_key_groups:
                self._remember(name, recorded)
                log.info("namespace learnt from the snapshot store", extra={"namespace": name,
                                                                              "max_key_groups": recorded})
            return self._max_key_groups[name]

    # -- shards --------------------------------------------------------------------------

    def key_groups_of(self, namespace: str, start: int, end: int) -> KeyGroupRange:
        """The shard's key groups, checked against the namespace (NotFound, InvalidInput)."""
        return _range(start, end, self.max_key_groups(namespace))

    def open_shard(self, namespace: str, start: int, end: int, epoch: int, states: Iterable[StateDescriptor],
                   source: OpenSource = RESUME, *, owner_id: str = "", claims: OwnerClaims | None = None) -> Shard:
        """Open a shard as the writer ``owner_id`` at ``epoch``, from ``source`` (see ``OpenSource``).

        Nothing changes unless the open succeeds (invariant 11): the request is validated, a
        restore is downloaded beside the shard and ownership is claimed (``claims``) before the
        older shards overlapping it are closed and its directory is swapped in. Open shards of
        the namespace whose key groups overlap belong to an older writer (the job changed
        parallelism or failed over): a newer epoch closes them, fencing them out.
        """
        max_key_groups = self.max_key_groups(namespace)
        key_groups = _range(start, end, max_key_groups)
        check_epoch(epoch)
        descriptors = list(states)
        shard_id = ShardId(namespace, key_groups)
        phases = OpenPhases()
        with phases.timed("wait"), self._lock:
            while any(key_groups.overlaps(other.key_groups) for other in self._building if other.namespace == namespace):
                self._built.wait()
            self._building.add(shard_id)
        try:
            if self.shelf is not None and source.resume:
                self.shelf.take(shard_id, shard_directory(self.data_dir, shard_id))
            shard = self._open(shard_id, max_key_groups, epoch, owner_id, descriptors, source, claims or NO_CLAIMS,
                               phases)
            if self.shelf is not None and not source.resume:
                self.shelf.discard(shard_id)  # older owners' copies now, as _take_over's here
        finally:
            with self._lock:
                self._building.discard(shard_id)
                self._built.notify_all()
        if self.on_open_phases is not None:
            self.on_open_phases(phases.seconds)
        return shard


    def shard(self, namespace: str, start: int, end: int, epoch: int) -> Shard:
        """The open shard for a request, after checking the writer's epoch."""
        shard = self._shards.get((namespace, start, end))
        if shard is None:
            self.max_key_groups(namespace)  # NotFound for an unknown namespace
            check_epoch(epoch)
            # Fenced before "closing, retry": a writer a newer one fenced must reopen, not retry,
            # also while the close the fence started still waits for its requests in flight.
            newer = [s for s in self.open_shards() if s.id.namespace == namespace and s.epoch > epoch
                     and s.key_groups.start <= end and start <= s.key_groups.end]
            if newer:  # a newer writer split or merged the range: this writer is fenced, not unopened
                raise Fenced(f"key groups {start}-{end} of {namespace!r} are owned by epoch {newer[0].epoch} "
                             f"(shard {newer[0].key_groups}); epoch {epoch} is fenced")
            self.fences.check(namespace, start, end, epoch)  # or did so on another member (fence_older)
            # tuple(): a copy taken at once (under the GIL), not an iteration the lock must guard
            if any(b.namespace == namespace and (b.key_groups.start, b.key_groups.end) == (start, end)
                   for b in tuple(self._building)):
                raise ShardClosed(f"shard {namespace}/{start}-{end} is being opened or closed on this node; retry "
                                  f"shortly, or reopen it (OpenShard) if it was closed")
            raise ShardNotOpen(f"shard {namespace}/{start}-{end} is not open on this node; open it first")
        check_epoch(epoch)
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
            _close_cleanly(shard)  # outside the lock: it waits for the shard's requests in flight
        finally:
            with self._lock:
                self._building.discard(shard.id)
                self._built.notify_all()
        if self.on_discarded is not None:
            self.on_discarded(shard.id)
        log.info("shard closed", extra={"namespace": namespace, "shard": str(shard.id)})

    def fence_older(self, namespace: str, key_groups: KeyGroupRange, epoch: int) -> list[ShardId]:
        """A writer at ``epoch`` opened ``key_groups`` on another member (a worker or a node): close
        the shards here overlapping them at older epochs, discard their directories, and refuse
        their writers from now on (Fenced). An older open under way is not waited for (a restore may take long,
        and this holds an RPC thread): it finds the record before it serves, and gives up."""
        self.fences.record(namespace, key_groups, epoch)  # first: an open under way checks it
        with self._lock:
            older = [s for k, s in self._shards.items()
                     if k[0] == namespace and key_groups.overlaps(s.key_groups) and s.epoch < epoch]
            for shard in older:
                del self._shards[(namespace, shard.key_groups.start, shard.key_groups.end)]
                self._building.add(shard.id)
        try:
            for shard in older:
                shard.close()  # no clean-close record: only a restore may serve these key groups again
                discard_later(shard.path)
                log.info("shard closed for a newer writer on another member",
                         extra={"namespace": namespace, "shard": str(shard.id), "epoch": shard.epoch,
                                "newer_epoch": epoch})
        finally:
            with self._lock:
                for shard in older:
                    self._building.discard(shard.id)
                self._built.notify_all()
        for shard in older:
            if self.on_discarded is not None:
                self.on_discarded(shard.id)
        return [shard.id for shard in older]

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
                _close_cleanly(shard)
            except Exception:
                failed += 1
                log.exception("shard close failed", extra=fields)
            else:
                if shard.broken is not None:  # released, but its writes since the last flush are lost
                    failed += 1
                log.info("shard closed", extra=fields)
        return failed



def _close_cleanly(shard: Shard) -> None:
    """A graceful close: memtables flushed, then the record that the directory is whole."""
    if shard.closed:
        return  # closed by a take-over or a failure: its directory is not vouched for
    shard.close()
    if shard.broken is not None or shard.session.failure:
        return  # lost writes (a failed flush) or a failed session: only a restore may serve it again
    clean_close.write(shard.path, clean_close.CleanClose(namespace=shard.id.namespace, key_groups=shard.key_groups,
                                                         epoch=shard.epoch, owner_id=shard.owner_id))


def check_epoch(epoch: int) -> None:
    problem = epoch_problem(epoch)
    if problem is not None:
        raise InvalidInput(problem)


def sweep_leftovers(data_dir: pathlib.Path) -> list[pathlib.Path]:
    """Remove what a crash left of restores and replacements: never a shard, always safe at start."""
    swept = []
    for pattern in (".*.restoring-*", ".*.replaced-*", ".*.sources-*"):
        for path in (data_dir / "namespaces").glob(f"*/shards/{pattern}"):
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
    return swept


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

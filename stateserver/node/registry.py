"""The node's namespaces and open shards, laid out under its data directory.

    <data-dir>/namespaces/<namespace>/namespace.json           {"max_key_groups": N}
    <data-dir>/namespaces/<namespace>/shards/<start>-<end>/     one RocksDB per shard
    <data-dir>/namespaces/<namespace>/shards/.<range>.restoring-*, .replaced-*   swept at start

A shard directory is a cache of object storage (invariant 8): it is opened as it is only when
it holds exactly what its writer expects (see ``clean_close`` and ``ShardRegistry._resume``);
otherwise the writer restores a checkpoint or asks for an empty shard.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from stateserver.shard import clean_close
from stateserver.store.durable_files import sync_directory
from stateserver.protocol.epochs import epoch_problem
from stateserver.protocol.errors import (
    AlreadyExists, Fenced, InvalidInput, NotFound, RestoreRequired, ShardClosed, ShardNotOpen,
)
from stateserver.protocol.keygroups import MAX_KEY_GROUPS_LIMIT, KeyGroupRange
from stateserver.protocol.limits import Limits
from stateserver.protocol.names import check_name
from stateserver.shard.rocks import RocksResources
from stateserver.shard.shard import Clock, Shard, ShardId, check_compatible, wall_clock_ms
from stateserver.protocol.states import StateDescriptor

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedRestore:
    """A checkpoint's copy of a shard, built in ``directory`` beside the shard's, not yet in place."""

    directory: pathlib.Path
    checkpoint_id: int
    result: Any  # handed to ShardRegistry.on_restored


# Builds a shard's state from a checkpoint beside the given path (the shard's directory).
Restorer = Callable[[ShardId, pathlib.Path], PreparedRestore]


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenSource:
    """Where an opened shard's state comes from: a checkpoint (``restore``), nothing (``empty``),
    or neither: the writer resumes its own shard as this node holds it, if that is allowed."""

    restore: Restorer | None = None
    empty: bool = False

    @property
    def resume(self) -> bool:
        return self.restore is None and not self.empty


RESUME = OpenSource()
EMPTY = OpenSource(empty=True)


class OwnerClaims(Protocol):
    """Ownership in the snapshot store, for one open (see stateserver.ownership.claims)."""

    def check(self) -> None:
        """Raise Fenced if a newer epoch, or another owner of this epoch, has some of the key groups."""
        ...

    def earlier_owners(self) -> list[str]:
        """Records of any epoch for the shard's key groups, described; empty if none."""
        ...

    def claim(self, restored_from: int | None) -> None:
        """Record the writer as owner; raises Fenced if a newer epoch or another owner has it."""
        ...


class _NoClaims:
    """A node without a snapshot store: nothing to claim, nobody recorded."""

    def check(self) -> None:
        return None

    def earlier_owners(self) -> list[str]:
        return []

    def claim(self, restored_from: int | None) -> None:
        return None


NO_CLAIMS: OwnerClaims = _NoClaims()


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
        # Told about every shard that starts a new lineage of files: opened from a checkpoint (with
        # the restorer's result), empty or new (None). A resumed shard keeps its lineage.
        self.on_restored: Callable[[Shard, Any], None] | None = None
        for swept in sweep_leftovers(data_dir):
            log.info("removed what a crash left", extra={"path": str(swept)})
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
        with self._lock:
            while any(key_groups.overlaps(other.key_groups) for other in self._building if other.namespace == namespace):
                self._built.wait()
            self._building.add(shard_id)
        try:
            return self._open(shard_id, max_key_groups, epoch, owner_id, descriptors, source, claims or NO_CLAIMS)
        finally:
            with self._lock:
                self._building.discard(shard_id)
                self._built.notify_all()

    def _open(self, shard_id: ShardId, max_key_groups: int, epoch: int, owner_id: str,
              descriptors: list[StateDescriptor], source: OpenSource, claims: OwnerClaims) -> Shard:
        key = _key(shard_id)
        path = shard_directory(self.data_dir, shard_id)
        with self._lock:
            existing = self._shards.get(key)
            overlapping = [s for k, s in self._shards.items()
                           if k[0] == shard_id.namespace and shard_id.key_groups.overlaps(s.key_groups)]
        for other in overlapping:
            if other.epoch > epoch:
                raise Fenced(f"shard {other.id} is owned by epoch {other.epoch}; epoch {epoch} is stale")
            if other.epoch == epoch and other.owner_id != owner_id:
                raise Fenced(f"epoch {epoch} of shard {other.id} is owned by writer {other.owner_id or '(anonymous)'} "
                             "on this node; use a newer epoch")
        if source.resume and existing is not None and existing.epoch == epoch:
            # The same writer again (a reconnect): the open shard is kept as it is.
            check_compatible({n: s.descriptor for n, s in existing.states.items()}, descriptors)
            claims.claim(None)
            existing.take_ownership(epoch)
            existing.declare_states(descriptors)
            return existing
        record = clean_close.read(path) if path.is_dir() else None
        if record is not None and record.epoch is not None and record.epoch > epoch:
            raise Fenced(f"shard {shard_id} was last owned by epoch {record.epoch}; epoch {epoch} is stale")
        claims.check()  # a stale writer learns that first: neither a restore nor a resume helps it
        if source.resume:
            return self._resume(shard_id, max_key_groups, epoch, owner_id, descriptors, overlapping, record, claims)
        prepared = source.restore(shard_id, path) if source.restore is not None else None
        try:
            stored = Shard.stored_states(prepared.directory, self.resources) if prepared is not None else {}
            check_compatible(stored, descriptors)
            claims.claim(prepared.checkpoint_id if prepared is not None else None)
        except BaseException:
            if prepared is not None:
                shutil.rmtree(prepared.directory, ignore_errors=True)
            raise
        self._take_over(shard_id, overlapping)
        if prepared is not None:
            prepared.directory.rename(path)
            sync_directory(path.parent)
        shard = self._new_shard(shard_id, max_key_groups, path)
        shard.reset_epoch(epoch)  # a restored epoch record is the old writer's, not this one's
        if self.on_restored is not None:  # a new lineage of files: nothing uploaded before is reusable as such
            self.on_restored(shard, prepared.result if prepared is not None else None)
        return self._serve(shard, epoch, owner_id, descriptors,
                           "restored" if prepared is not None else "empty")

    def _resume(self, shard_id: ShardId, max_key_groups: int, epoch: int, owner_id: str,
                descriptors: list[StateDescriptor], overlapping: list[Shard], record: clean_close.CleanClose | None,
                claims: OwnerClaims) -> Shard:
        """Open the writer's own shard as this node holds it, if that is exactly its state."""
        path = shard_directory(self.data_dir, shard_id)
        found: list[str] = [f"shard {s.id} is open here at epoch {s.epoch}" for s in overlapping]
        others = [p for p in self._directories(shard_id.namespace) if p[0].overlaps(shard_id.key_groups) and p[1] != path]
        if others:
            found.append("directories of overlapping key groups " + ", ".join(str(r) for r, _ in others))
        if path.is_dir() and not overlapping:
            if record is None:
                found.append(f"the directory of {shard_id} was not closed cleanly (a crash: it may be torn)")
            elif record.owner_id is not None and (record.namespace, record.key_groups, record.epoch, record.owner_id) != (
                    shard_id.namespace, shard_id.key_groups, epoch, owner_id):
                found.append(f"the directory of {shard_id} belongs to epoch {record.epoch} of writer "
                             f"{record.owner_id or '(anonymous)'}")
        if not found and not path.is_dir():
            earlier = claims.earlier_owners()
            if earlier:
                found.append("earlier owners in the snapshot store (" + ", ".join(earlier[:5]) + ")")
        if found:
            raise RestoreRequired(f"cannot resume shard {shard_id} at epoch {epoch} as it is: {'; '.join(found)}. "
                                  "Open it with restore='latest' or a checkpoint id, or restore='empty' to start "
                                  "from nothing")
        check_compatible(Shard.stored_states(path, self.resources) if path.is_dir() else {}, descriptors)
        claims.claim(record.restored_from if record is not None else None)
        shard = self._new_shard(shard_id, max_key_groups, path)
        clean_close.remove(path)  # from now on the directory changes: dirty until closed cleanly
        if record is None and self.on_restored is not None:
            self.on_restored(shard, None)  # a new shard: whatever an earlier incarnation uploaded is not its
        return self._serve(shard, epoch, owner_id, descriptors, "resumed" if record is not None else "new")

    def _new_shard(self, shard_id: ShardId, max_key_groups: int, path: pathlib.Path) -> Shard:
        return Shard(shard_id=shard_id, max_key_groups=max_key_groups, path=path,
                     resources=self.resources, limits=self.limits, clock=self.clock)

    def _serve(self, shard: Shard, epoch: int, owner_id: str, descriptors: list[StateDescriptor], how: str) -> Shard:
        try:
            shard.owner_id = owner_id
            shard.take_ownership(epoch)
            shard.declare_states(descriptors)
        except BaseException:
            shard.close()
            raise
        with self._lock:
            self._shards[_key(shard.id)] = shard
        log.info("shard opened", extra={"namespace": shard.id.namespace, "shard": str(shard.id), "epoch": epoch,
                                        "how": how})
        return shard

    def _take_over(self, shard_id: ShardId, overlapping: list[Shard]) -> None:
        """Close the older shards overlapping ``shard_id`` and discard every directory of its
        key groups here: they are older owners' copies."""
        with self._lock:
            for other in overlapping:
                if self._shards.get(_key(other.id)) is other:
                    del self._shards[_key(other.id)]
        for other in overlapping:
            other.close()  # waits for its requests in flight: none of them takes the registry's lock
            log.info("shard closed for a newer writer", extra={"namespace": shard_id.namespace, "shard": str(other.id)})
        for key_groups, path in self._directories(shard_id.namespace):
            if key_groups.overlaps(shard_id.key_groups):
                discarded = path.parent / f".{path.name}.replaced-{uuid.uuid4().hex[:8]}"
                try:
                    path.rename(discarded)
                except FileNotFoundError:
                    continue  # an open of other key groups the directory overlapped took it meanwhile
                shutil.rmtree(discarded, ignore_errors=True)
        shards_dir = self.data_dir / "namespaces" / shard_id.namespace / "shards"
        shards_dir.mkdir(parents=True, exist_ok=True)
        sync_directory(shards_dir)

    def _directories(self, namespace: str) -> list[tuple[KeyGroupRange, pathlib.Path]]:
        """The shard directories of ``namespace`` on this node, open or not."""
        shards_dir = self.data_dir / "namespaces" / namespace / "shards"
        if not shards_dir.is_dir():
            return []
        found = []
        for path in shards_dir.iterdir():
            try:
                found.append((KeyGroupRange.parse(path.name), path))
            except ValueError:
                continue  # hidden build directories
        return found

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
            check_epoch(epoch)
            newer = [s for s in self.open_shards() if s.id.namespace == namespace and s.epoch > epoch
                     and s.key_groups.start <= end and start <= s.key_groups.end]
            if newer:  # a newer writer split or merged the range: this writer is fenced, not unopened
                raise Fenced(f"key groups {start}-{end} of {namespace!r} are owned by epoch {newer[0].epoch} "
                             f"(shard {newer[0].key_groups}); epoch {epoch} is fenced")
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
                _close_cleanly(shard)
            except Exception:
                failed += 1
                log.exception("shard close failed", extra=fields)
            else:
                if shard.broken is not None:  # released, but its writes since the last flush are lost
                    failed += 1
                log.info("shard closed", extra=fields)
        return failed


def _key(shard_id: ShardId) -> tuple[str, int, int]:
    return shard_id.namespace, shard_id.key_groups.start, shard_id.key_groups.end


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

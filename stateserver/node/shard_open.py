"""How a shard is opened: from a checkpoint (restore), from nothing (empty), or as this node holds it
(resume), with the writer's ownership claimed in the snapshot store before anything changes.

A shard directory is a cache of object storage (invariant 8): it is resumed as it is only when it
holds exactly what its writer expects (``clean_close`` records that); otherwise the writer restores
a checkpoint or asks for an empty shard. Nothing changes unless the open succeeds (invariant 11): a
restore is built beside the shard's directory and swapped in only once ownership is claimed.
A restore of the checkpoint an open shard here still is exactly (a failover's survivors: no write
turn since the cut of that checkpoint, confirmed here, or since the shard was restored from it) keeps
the shard in place: the check and the epoch change are made under the shard's write lock, so no
write of the older writer lands between them and every later one is fenced. Where each open spends
its time is recorded per phase (``open_phases``).
``ShardRegistry.open_shard`` runs this path with the shards overlapping the open held back.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import threading
from collections.abc import Callable
from typing import Any, Protocol

from stateserver.node.fence_records import FenceRecords, fenced
from stateserver.node.open_phases import OpenPhases
from stateserver.protocol.errors import Fenced, RestoreRequired, ShardClosed
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.limits import Limits
from stateserver.protocol.states import StateDescriptor
from stateserver.shard import clean_close
from stateserver.shard.directory_removal import discard_later
from stateserver.shard.rocks import RocksResources
from stateserver.shard.shard import Clock, Shard, ShardId, check_compatible

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedRestore:
    """A checkpoint's copy of a shard, built in ``directory`` beside the shard's, not yet in place."""

    directory: pathlib.Path
    checkpoint_id: int
    result: Any  # handed to ShardRegistry.on_restored
    # The states the copy declares, from the checkpoint's manifests; None: read them from the
    # copy (a RocksDB open of its own, ~25 ms, before the shard's open).
    states: dict[str, StateDescriptor] | None = None


# Builds a shard's state from a checkpoint beside the given path (the shard's directory).
Restorer = Callable[[ShardId, pathlib.Path], PreparedRestore]


@dataclasses.dataclass(frozen=True, kw_only=True)
class InPlace:
    """An open shard that was exactly the checkpoint a restore asks for, and when: it serves the
    new writer as it is if its state has not changed since (no write turn taken, same states)."""

    checkpoint_id: int
    changes: int  # Shard.changes when its state was exactly the checkpoint
    states: dict[str, StateDescriptor]  # the checkpoint's states, from its manifests
    result: Any  # handed to ShardRegistry.on_restored, as a restore's
    on_kept: Callable[[], None] = lambda: None  # told once the shard was kept


# Whether the open shard was exactly the checkpoint to restore; None if not (or not known).
InPlaceCheck = Callable[[Shard], InPlace | None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenSource:
    """Where an opened shard's state comes from: a checkpoint (``restore``), nothing (``empty``),
    or neither: the writer resumes its own shard as this node holds it, if that is allowed."""

    restore: Restorer | None = None
    empty: bool = False
    # With ``restore``: an open shard of exactly these key groups that is still exactly the
    # checkpoint is kept in place (a failover's survivors): no copy, no close, no RocksDB open.
    in_place: InPlaceCheck | None = None

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

    def claim(self, restored_from: int | None, *, checked: bool = False) -> None:
        """Record the writer as owner; raises Fenced if a newer epoch or another owner has it.
        ``checked``: ``check`` ran just before, with nothing built since."""
        ...


class _NoClaims:
    """A node without a snapshot store: nothing to claim, nobody recorded."""

    def check(self) -> None:
        return None

    def earlier_owners(self) -> list[str]:
        return []

    def claim(self, restored_from: int | None, *, checked: bool = False) -> None:
        return None


NO_CLAIMS: OwnerClaims = _NoClaims()


def shard_directory(data_dir: pathlib.Path, shard_id: ShardId) -> pathlib.Path:
    return data_dir / "namespaces" / shard_id.namespace / "shards" / str(shard_id.key_groups)


class ShardOpening:
    """The open path of ``ShardRegistry``: resume, empty or restore, then serve the shard."""

    data_dir: pathlib.Path
    resources: RocksResources
    limits: Limits
    clock: Clock
    _lock: threading.Lock
    _shards: dict[tuple[str, int, int], Shard]
    on_restored: Callable[[Shard, Any], None] | None
    on_discarded: Callable[[ShardId], None] | None  # a shard's key groups left this node
    fences: FenceRecords

    def _open(self, shard_id: ShardId, max_key_groups: int, epoch: int, owner_id: str,
              descriptors: list[StateDescriptor], source: OpenSource, claims: OwnerClaims,
              phases: OpenPhases) -> Shard:
        key = shard_key(shard_id)
        path = shard_directory(self.data_dir, shard_id)
        with self._lock:
            existing = self._shards.get(key)
            overlapping = [s for k, s in self._shards.items()
                           if k[0] == shard_id.namespace and shard_id.key_groups.overlaps(s.key_groups)]
        self.fences.check(shard_id.namespace, shard_id.key_groups.start, shard_id.key_groups.end, epoch)
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
        with phases.timed("check"):
            claims.check()  # a stale writer learns that first: neither a restore nor a resume helps it
        if source.resume:
            return self._resume(shard_id, max_key_groups, epoch, owner_id, descriptors, overlapping, record, claims,
                                phases)
        if source.in_place is not None and existing is not None and overlapping == [existing]:
            kept = self._keep_in_place(existing, epoch, owner_id, descriptors, source.in_place, claims, phases)
            if kept is not None:
                return kept
        with phases.timed("restore"):
            prepared = source.restore(shard_id, path) if source.restore is not None else None
        try:
            with phases.timed("restore"):
                stored = ({} if prepared is None else prepared.states if prepared.states is not None
                          else Shard.stored_states(prepared.directory, self.resources))
            check_compatible(stored, descriptors)
            with phases.timed("claim"):
                claims.claim(prepared.checkpoint_id if prepared is not None else None)
        except BaseException:
            if prepared is not None:
                shutil.rmtree(prepared.directory, ignore_errors=True)
            raise
        with phases.timed("take_over"):
            self._take_over(shard_id, overlapping)
            if prepared is not None:
                prepared.directory.rename(path)
        with phases.timed("rocksdb_open"):
            shard = self._new_shard(shard_id, max_key_groups, path)
        with phases.timed("serve"):
            shard.reset_epoch(epoch)  # a restored epoch record is the old writer's, not this one's
            if self.on_restored is not None:  # a new lineage of files: nothing uploaded before is reusable as such
                self.on_restored(shard, prepared.result if prepared is not None else None)
        return self._serve(shard, epoch, owner_id, descriptors,
                           "restored" if prepared is not None else "empty", phases)

    def _resume(self, shard_id: ShardId, max_key_groups: int, epoch: int, owner_id: str,
                descriptors: list[StateDescriptor], overlapping: list[Shard], record: clean_close.CleanClose | None,
                claims: OwnerClaims, phases: OpenPhases) -> Shard:
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
        with phases.timed("rocksdb_open"):
            check_compatible(Shard.stored_states(path, self.resources) if path.is_dir() else {}, descriptors)
        with phases.timed("claim"):
            claims.claim(record.restored_from if record is not None else None)
        with phases.timed("rocksdb_open"):
            shard = self._new_shard(shard_id, max_key_groups, path)
        with phases.timed("serve"):
            clean_close.remove(path)  # from now on the directory changes: dirty until closed cleanly
            if record is None and self.on_restored is not None:
                self.on_restored(shard, None)  # a new shard: whatever an earlier incarnation uploaded is not its
        return self._serve(shard, epoch, owner_id, descriptors, "resumed" if record is not None else "new", phases)

    def _keep_in_place(self, shard: Shard, epoch: int, owner_id: str, descriptors: list[StateDescriptor],
                       in_place: InPlaceCheck, claims: OwnerClaims, phases: OpenPhases) -> Shard | None:
        """Serve the open ``shard`` to the writer at ``epoch`` as it is, if it is still exactly the
        checkpoint to restore; None (nothing changed but maybe the claim, which the restore makes
        the same) if it is not.

        The check and the epoch change happen under the shard's write lock, which every write
        takes its turn under: no write of the older writer lands between them, and every one after
        is fenced (invariants 8 and 11). A restore would build the same state from the same files.
        """
        with phases.timed("restore"):
            found = in_place(shard)
        if found is None:
            return None
        path = shard_directory(self.data_dir, shard.id)
        if any(r.overlaps(shard.key_groups) and p != path for r, p in self._directories(shard.id.namespace)):
            return None  # older copies of overlapping key groups: the take-over path discards them
        check_compatible(found.states, descriptors)
        with phases.timed("claim"):
            claims.claim(found.checkpoint_id, checked=True)  # check() ran a moment ago, in _open
        with phases.timed("serve"):
            # Told before the epoch changes: it records the shard's turns as those of the
            # checkpoint, and until then only the older writer can take one, which the check below
            # sees; if it did, the record is dropped again (a new lineage: nothing is exact).
            if self.on_restored is not None:
                self.on_restored(shard, found.result)
            try:
                with shard.lease(), shard.write_lock:
                    kept = (shard.changes == found.changes and shard.broken is None and not shard.session.failure
                            and {n: s.descriptor for n, s in shard.states.items()} == found.states)
                    if kept:
                        shard.take_ownership(epoch)  # the older epoch is fenced from here on
                        shard.owner_id = owner_id
            except ShardClosed:
                kept = False  # closed meanwhile (a failure): the restore path builds it afresh
            if not kept:
                if self.on_restored is not None:
                    self.on_restored(shard, None)
                return None
            shard.declare_states(descriptors)
        found.on_kept()
        log.info("shard opened", extra={"namespace": shard.id.namespace, "shard": str(shard.id), "epoch": epoch,
                                        "how": "kept in place", "checkpoint": found.checkpoint_id,
                                        "phases_ms": phases.rounded()})
        return shard

    def _new_shard(self, shard_id: ShardId, max_key_groups: int, path: pathlib.Path) -> Shard:
        return Shard(shard_id=shard_id, max_key_groups=max_key_groups, path=path,
                     resources=self.resources, limits=self.limits, clock=self.clock)

    def _serve(self, shard: Shard, epoch: int, owner_id: str, descriptors: list[StateDescriptor], how: str,
               phases: OpenPhases) -> Shard:
        try:
            with phases.timed("serve"):
                shard.owner_id = owner_id
                shard.take_ownership(epoch)
                shard.declare_states(descriptors)
        except BaseException:
            shard.close()
            raise
        with self._lock:
            # A newer writer that opened overlapping key groups on another member meanwhile
            # (``fence_older``) fences this open: checked under the lock that fence_older scans
            # the open shards under, so the shard is either refused here or closed by it.
            newer_writer = self.fences.newer(shard.id.namespace, shard.key_groups.start, shard.key_groups.end, epoch)
            if newer_writer is None:
                self._shards[shard_key(shard.id)] = shard
        if newer_writer is not None:
            shard.close()
            raise fenced(shard.id.namespace, newer_writer, epoch)
        log.info("shard opened", extra={"namespace": shard.id.namespace, "shard": str(shard.id), "epoch": epoch,
                                        "how": how, "phases_ms": phases.rounded()})
        return shard

    def _take_over(self, shard_id: ShardId, overlapping: list[Shard]) -> None:
        """Close the older shards overlapping ``shard_id`` and discard every directory of its
        key groups here: they are older owners' copies."""
        with self._lock:
            for other in overlapping:
                if self._shards.get(shard_key(other.id)) is other:
                    del self._shards[shard_key(other.id)]
        for other in overlapping:
            other.close()  # waits for its requests in flight: none of them takes the registry's lock
            log.info("shard closed for a newer writer", extra={"namespace": shard_id.namespace, "shard": str(other.id)})
        for key_groups, path in self._directories(shard_id.namespace):
            if key_groups.overlaps(shard_id.key_groups):
                if not discard_later(path):  # tens of ms a shard: the open need not wait
                    continue  # an open of other key groups the directory overlapped took it meanwhile
                if key_groups != shard_id.key_groups and self.on_discarded is not None:
                    self.on_discarded(ShardId(shard_id.namespace, key_groups))  # rescaled away
        shards_dir = self.data_dir / "namespaces" / shard_id.namespace / "shards"
        shards_dir.mkdir(parents=True, exist_ok=True)
        # No fsync of the renames here or at the swap: after a crash a directory is served as it
        # is only with a clean-close record, which a graceful close writes durably (design note 9);
        # whatever a crash leaves of a swap is restored from a checkpoint, never served.

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


def shard_key(shard_id: ShardId) -> tuple[str, int, int]:
    return shard_id.namespace, shard_id.key_groups.start, shard_id.key_groups.end

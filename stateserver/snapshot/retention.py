"""Retention by reference counting: what retiring old checkpoints frees, without listing the namespace.

As Flink's SharedStateRegistry: an object lives while a kept checkpoint names it. The kept
checkpoints are the ``retain`` latest committed ones, and every checkpoint a current shard owner
restored from and has not committed past since (it may reuse that checkpoint's files in the
snapshot it is taking: the ownership record's ``restored_from``). An expiring checkpoint's
objects go when no kept checkpoint names them; the metadata goes first, so that no restore starts
from a checkpoint whose files are going. Loading the kept and expiring metadata (a listing of
``<ns>/checkpoints`` and one of ``<ns>/owners``) is all it reads: metadata and ownership records are
create-only, so ``RetentionMemo`` keeps them between runs.

Uploads that no committed checkpoint names (failed checkpoints, retried uploads) are not seen here;
the orphan sweep in ``gc`` finds them by listing, rarely.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from stateserver.ownership import owner_records

from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.errors import NotFound, Unavailable
from stateserver.store import ObjectStore, StoreUnavailable
from stateserver.ownership.owner_records import StoredOwnerRecord
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GcItem:
    key: str
    size: int
    reason: str


@dataclasses.dataclass
class RetentionMemo:
    """Immutable objects already read: checkpoint metadata by (namespace, id), ``restored_from`` by record key."""

    metadata: dict[tuple[str, int], cpb.CheckpointMetadata] = dataclasses.field(default_factory=dict)
    restored_from: dict[str, int | None] = dataclasses.field(default_factory=dict)

    def keep_only(self, namespace: str, checkpoint_ids: Iterable[int], record_keys: Iterable[str]) -> None:
        ids, keys = set(checkpoint_ids), set(record_keys)
        for entry in [e for e in self.metadata if e[0] == namespace and e[1] not in ids]:
            del self.metadata[entry]
        prefix = paths.owners_prefix(namespace) + "/"
        for key in [k for k in self.restored_from if k.startswith(prefix) and k not in keys]:
            del self.restored_from[key]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionPlan:
    namespace: str
    committed: tuple[int, ...]
    retained: tuple[int, ...]
    # Restored from by a current owner that has not committed a later checkpoint: kept too.
    pinned: tuple[int, ...]
    expiring: tuple[int, ...]
    # Every key a kept checkpoint names, its metadata included.
    referenced: frozenset[str]
    # Expiring metadata first, then the objects only expiring checkpoints name.
    retiring: tuple[GcItem, ...]
    # Objects of each expiring checkpoint, so that a pin appearing late can keep them.
    named_by_expiring: dict[int, frozenset[str]]
    superseded_owners: tuple[StoredOwnerRecord, ...]
    current_owners: tuple[StoredOwnerRecord, ...]
    notes: tuple[str, ...]


def plan_retention(store: ObjectStore, namespace: str, *, retain: int, memo: RetentionMemo | None = None
                   ) -> RetentionPlan:
    memo = memo if memo is not None else RetentionMemo()
    catalog = CheckpointCatalog(store)
    committed = catalog.committed_ids(namespace)
    retained = committed[-retain:]
    records = owner_records.list_owner_records(store, namespace)
    current = owner_records.current_records(records)
    notes: list[str] = []

    def load(checkpoint_id: int) -> cpb.CheckpointMetadata:
        entry = (namespace, checkpoint_id)
        if entry not in memo.metadata:
            memo.metadata[entry] = catalog.load(namespace, checkpoint_id)
        return memo.metadata[entry]

    pinned = _pinned(store, namespace, current, committed, [load(c) for c in retained], memo, notes)
    kept = sorted(set(retained) | pinned)
    expiring = [c for c in committed if c not in kept]
    referenced: set[str] = set()
    for checkpoint_id in kept:
        referenced |= keys_named(load(checkpoint_id))
    named_by_expiring: dict[int, frozenset[str]] = {}
    for checkpoint_id in expiring:
        try:
            named_by_expiring[checkpoint_id] = frozenset(keys_named(load(checkpoint_id)))
        except NotFound:  # another collection retired it meanwhile
            named_by_expiring[checkpoint_id] = frozenset()

    retiring = [GcItem(key=paths.checkpoint_metadata(namespace, c), size=0,
                       reason=f"metadata of checkpoint {c}, older than the {retain} retained")
                for c in expiring]
    sizes = {f.object_key: f.size for c in expiring if (namespace, c) in memo.metadata
             for h in memo.metadata[(namespace, c)].shards for f in (*h.shared_files, *h.private_files)}
    memo.keep_only(namespace, committed, (r.key for r in records))
    owners: dict[str, list[int]] = {}
    for checkpoint_id, keys in named_by_expiring.items():
        for key in keys - referenced:
            if not paths.is_metadata(key):
                owners.setdefault(key, []).append(checkpoint_id)
    for key in sorted(owners):
        parsed = paths.parse_key(key)
        what = f"{parsed.kind} file" if parsed is not None else "object"
        named = ", ".join(map(str, sorted(owners[key])))
        retiring.append(GcItem(key=key, size=sizes.get(key, 0), reason=f"{what} named only by expired checkpoint {named}"))
    return RetentionPlan(namespace=namespace, committed=tuple(committed), retained=tuple(retained),
                         pinned=tuple(sorted(pinned)), expiring=tuple(expiring), referenced=frozenset(referenced),
                         retiring=tuple(retiring), named_by_expiring=named_by_expiring,
                         superseded_owners=tuple(owner_records.superseded_records(records)),
                         current_owners=tuple(current), notes=tuple(notes))


def _pinned(store: ObjectStore, namespace: str, current: list[StoredOwnerRecord], committed: list[int],
            retained: list[cpb.CheckpointMetadata], memo: RetentionMemo, notes: list[str]) -> set[int]:
    """Checkpoints a current owner restored from and has not committed past since."""
    pinned = set()
    for record in current:
        source = owner_records.restored_from(store, record, memo.restored_from)
        if source is None or any(_committed_since(m, record, source) for m in retained):
            continue
        if source in committed:
            pinned.add(source)
        else:
            notes.append(f"the owner of key groups {record.key_groups} (epoch {record.epoch}) restored checkpoint "
                         f"{source}, which is no longer committed; its next snapshot uploads what it misses")
    return pinned


def _committed_since(metadata: cpb.CheckpointMetadata, record: StoredOwnerRecord, source: int) -> bool:
    return metadata.checkpoint_id > source and any(
        h.writer_epoch >= record.epoch and h.key_group_start <= record.key_groups.end
        and record.key_groups.start <= h.key_group_end for h in metadata.shards)


def newly_pinned(store: ObjectStore, plan: RetentionPlan, memo: RetentionMemo | None = None) -> set[int]:
    """Expiring checkpoints that an owner claimed since the plan was made restored from (read again)."""
    records = owner_records.current_records(owner_records.list_owner_records(store, plan.namespace))
    known = {r.key for r in plan.current_owners}
    restored = memo.restored_from if memo is not None else None
    sources = {owner_records.restored_from(store, r, restored) for r in records if r.key not in known}
    return {c for c in plan.expiring if c in sources}


def keys_named(metadata: cpb.CheckpointMetadata) -> set[str]:
    keys = {paths.checkpoint_metadata(metadata.namespace, metadata.checkpoint_id)}
    for handle in metadata.shards:
        keys |= keys_of_handle(handle)
    return keys


def keys_of_handle(handle: cpb.ShardSnapshotHandle) -> set[str]:
    keys = {handle.manifest_key}
    keys.update(f.object_key for f in handle.shared_files)
    keys.update(f.object_key for f in handle.private_files)
    return keys


def delete_objects(store: ObjectStore, items: Iterable[GcItem]) -> None:
    for item in items:
        try:
            store.delete(item.key)
        except StoreUnavailable as exc:
            # What is gone stays gone; the next run finds the rest unreferenced again.
            raise Unavailable(f"garbage collection stopped at {item.key}: {exc}") from exc

"""Retention and garbage collection of a namespace's snapshot store (invariant 4).

Two entry points:

``retire_checkpoints`` runs after every commit on the node. It reference-counts (``retention``): the
kept checkpoints are the ``retain`` latest committed ones plus those a current shard owner restored
from and has not committed past; the metadata of the others goes first, then every object only
they name, then the ownership records newer ones supersede. It lists ``<ns>/checkpoints`` and
``<ns>/owners``, never the namespace.

``collect_garbage`` (``stateserver gc``, and the node every ``orphan_sweep_interval_s``) does the
same and then lists the namespace to find orphans: objects spelled by ``paths`` that no committed
checkpoint names (uploads of failed checkpoints, retried uploads). An orphan goes only once it is
older than ``min_age``, whatever checkpoint id it carries: a writer that rolled back may be
uploading under an id at or below the latest committed one. Files a young shard manifest names
(SSTs a checkpoint in flight reuses) stay too. Keys that ``paths`` does not spell are never
touched. A dry run deletes nothing and reports the same list.

Why this cannot break a checkpoint, a commit racing it included: see ``retention`` and the README's
design notes. In short, a snapshot reuses only files of its owner's last confirmed checkpoint or
of the checkpoint it restored; SSTs are immutable, so every file it reuses is named by each later
commit of that owner, hence by a retained checkpoint, or by the pinned restore source; and the
commit confirms every object it names exists before writing metadata.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterable

from stateserver.store import paths
from stateserver.protocol.errors import InvalidInput, Unavailable
from stateserver.store import ObjectMeta, ObjectNotFound, ObjectStore, StoreUnavailable
from stateserver.snapshot.retention import (
    GcItem,
    RetentionMemo,
    RetentionPlan,
    delete_objects,
    keys_of_handle,
    newly_pinned,
    plan_retention,
)
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

__all__ = ["GcItem", "GcReport", "RetentionMemo", "collect_garbage", "retire_checkpoints"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GcReport:
    """What was deleted (or, in a dry run, would be), in the order of deletion."""

    namespace: str
    dry_run: bool
    retained: tuple[int, ...]
    expired: tuple[int, ...]
    deleted: tuple[GcItem, ...]
    # Objects no retained checkpoint names, kept because a checkpoint in flight may need them.
    kept_young: tuple[GcItem, ...]
    # Anything worth an operator's eye that did not stop the collection.
    notes: tuple[str, ...] = ()
    # Checkpoints kept beyond ``retained``: a current owner restored them and may reuse their files.
    pinned: tuple[int, ...] = ()
    # Ownership records superseded by newer ones (also in ``deleted``, after the snapshot objects).
    owner_records: tuple[GcItem, ...] = ()

    @property
    def bytes_deleted(self) -> int:
        return sum(item.size for item in self.deleted)


def retire_checkpoints(store: ObjectStore, namespace: str, *, retain: int, dry_run: bool = False,
                       memo: RetentionMemo | None = None) -> GcReport:
    """Retention after a commit: reference counting only, no listing of the namespace."""
    _check_retain(retain)
    plan = plan_retention(store, namespace, retain=retain, memo=memo)
    return _execute(store, plan, orphans=[], kept_young=[], notes=list(plan.notes), dry_run=dry_run, memo=memo)


def collect_garbage(store: ObjectStore, namespace: str, *, retain: int, min_age: datetime.timedelta,
                    now: datetime.datetime, dry_run: bool, memo: RetentionMemo | None = None) -> GcReport:
    """Retention, then the orphan sweep (one listing of the namespace)."""
    _check_retain(retain)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (object stores report UTC times)")
    plan = plan_retention(store, namespace, retain=retain, memo=memo)
    objects = _list_spelled(store, namespace)
    notes = list(plan.notes)
    sizes = {meta.key: meta.size for meta, _ in objects}
    retiring_keys = {item.key for item in plan.retiring}
    plan = dataclasses.replace(plan, retiring=tuple(dataclasses.replace(item, size=sizes.get(item.key, item.size))
                                                     for item in plan.retiring))
    latest = plan.committed[-1] if plan.committed else 0
    uncommitted = [(meta, parsed) for meta, parsed in objects
                   if meta.key not in plan.referenced and meta.key not in retiring_keys]
    protected = _named_by_young_manifests(store, uncommitted, min_age, now, notes)
    orphans: list[GcItem] = []
    young: list[GcItem] = [dataclasses.replace(item, reason="named by a shard manifest of a checkpoint that may "
                                               f"still commit (younger than {min_age})")
                           for item in plan.retiring if item.key in protected]
    plan = dataclasses.replace(plan, retiring=tuple(i for i in plan.retiring if i.key not in protected))
    for meta, parsed in objects:
        if meta.key in plan.referenced or meta.key in retiring_keys or parsed.kind == "metadata":
            continue  # kept, retired by reference counting, or a checkpoint's commit point
        if meta.key in protected:
            young.append(GcItem(key=meta.key, size=meta.size, reason="named by a shard manifest of a checkpoint "
                                f"that may still commit (younger than {min_age})"))
        elif now - meta.last_modified >= min_age:
            orphans.append(GcItem(key=meta.key, size=meta.size, reason=_orphan_reason(parsed, latest, plan, min_age)))
        else:
            young.append(GcItem(key=meta.key, size=meta.size, reason=f"{parsed.kind} file of checkpoint "
                                f"{parsed.checkpoint_id}, named by no committed checkpoint and younger than {min_age}"))
    return _execute(store, plan, orphans=orphans, kept_young=young, notes=notes, dry_run=dry_run, memo=memo)


def _execute(store: ObjectStore, plan: RetentionPlan, *, orphans: list[GcItem], kept_young: list[GcItem],
             notes: list[str], dry_run: bool, memo: RetentionMemo | None) -> GcReport:
    metadata = [item for item in plan.retiring if paths.is_metadata(item.key)]
    files = [item for item in plan.retiring if not paths.is_metadata(item.key)]
    owners = [GcItem(key=r.key, size=0, reason=f"ownership record of epoch {r.epoch} for key groups {r.key_groups}, "
                     "superseded by newer records") for r in plan.superseded_owners]
    if not dry_run:
        # The checkpoints stop existing before their files go, so no restore starts from one.
        delete_objects(store, metadata)
        late = newly_pinned(store, plan, memo) if metadata else set()
        if late:
            # An owner restored one of them while this run decided: keep its files (the orphan sweep
            # takes them once they are old, and the owner's next snapshot uploads what is missing).
            spared = frozenset().union(*(plan.named_by_expiring[c] for c in late))
            files = [item for item in files if item.key not in spared]
            notes.append(f"checkpoints {sorted(late)} were restored while retiring them; their files are kept")
        delete_objects(store, files)
        delete_objects(store, orphans)
        delete_objects(store, owners)
    deleted = (*metadata, *files, *orphans, *owners)
    report = GcReport(namespace=plan.namespace, dry_run=dry_run, retained=plan.retained, expired=plan.expiring,
                      deleted=deleted, kept_young=tuple(kept_young), notes=tuple(notes), pinned=plan.pinned,
                      owner_records=tuple(owners))
    log.info("garbage collected", extra={"namespace": plan.namespace, "dry_run": dry_run, "objects": len(deleted),
                                         "bytes": report.bytes_deleted, "retained": list(plan.retained),
                                         "pinned": list(plan.pinned), "owner_records": len(owners)})
    return report


def _check_retain(retain: int) -> None:
    if retain < 1:
        raise InvalidInput(f"retain must keep at least 1 checkpoint, not {retain}")


def _orphan_reason(parsed: paths.ParsedKey, latest: int, plan: RetentionPlan, min_age: datetime.timedelta) -> str:
    checkpoint_id = parsed.checkpoint_id
    if checkpoint_id in plan.expiring:
        return f"{parsed.kind} file of expired checkpoint {checkpoint_id}, named by no retained checkpoint"
    if checkpoint_id in plan.committed:
        return f"{parsed.kind} file of checkpoint {checkpoint_id} that its metadata does not name (an upload retried)"
    if checkpoint_id > latest:
        return f"{parsed.kind} file of checkpoint {checkpoint_id}, not committed, older than {min_age}"
    return (f"{parsed.kind} file of checkpoint {checkpoint_id}, which never committed and is subsumed by "
            f"checkpoint {latest}; older than {min_age}")


def _named_by_young_manifests(store: ObjectStore, objects: Iterable[tuple[ObjectMeta, paths.ParsedKey]],
                              min_age: datetime.timedelta, now: datetime.datetime, notes: list[str]) -> set[str]:
    """What young shard manifests no committed checkpoint names yet name, SSTs they reuse from older
    checkpoints included: if their checkpoint commits, it needs every one. Any checkpoint id: a
    writer that rolled back may be taking it."""
    keys: set[str] = set()
    for meta, parsed in objects:
        if parsed.kind != "manifest" or now - meta.last_modified >= min_age:
            continue
        handle = cpb.ShardSnapshotHandle()
        try:
            handle.ParseFromString(store.get(meta.key))
        except ObjectNotFound:
            continue  # its writer's own cleanup got there first
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot read shard manifest {meta.key}: {exc}") from exc
        except Exception as exc:  # a damaged manifest cannot commit; say so and go on
            notes.append(f"shard manifest {meta.key} cannot be read ({exc}); the files it names are not protected")
            continue
        keys |= keys_of_handle(handle)
    return keys


def _list_spelled(store: ObjectStore, namespace: str) -> list[tuple[ObjectMeta, paths.ParsedKey]]:
    """Every object of the namespace whose key ``paths`` spells, sorted by key."""
    found = []
    prefixes = (paths.checkpoints_prefix(namespace), paths.manifests_prefix(namespace),
                paths.private_prefix(namespace), paths.shared_prefix(namespace))
    for prefix in prefixes:
        try:
            listing = list(store.list(prefix))
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot list {prefix}: {exc}") from exc
        for meta in listing:
            parsed = paths.parse_key(meta.key)
            if parsed is not None and parsed.namespace == namespace:
                found.append((meta, parsed))
    return sorted(found, key=lambda pair: pair[0].key)

"""Retention and garbage collection of a namespace's snapshot store (invariant 4).

    1. Keep the ``retain`` latest committed checkpoints; every key their metadata names (shared,
       private and manifest keys, and the metadata itself) is referenced.
    2. Delete the metadata of older committed checkpoints first: from then on they do not exist,
       so no restore can start from a checkpoint whose files are going.
    3. Delete every other object spelled by ``paths`` that nothing references:
       - its checkpoint id is at or below the latest committed one: that checkpoint is expired,
         or failed and can never commit (the catalog refuses subsumed ids);
       - its id is above: the checkpoint may still be in flight, so only objects older than
         ``min_age`` go. Files named by a young manifest of such a checkpoint (SSTs it reuses
         from an earlier checkpoint) are kept too.
    Keys that ``paths`` does not spell are never touched. A dry run deletes nothing and reports
    the same list.

The window this cannot close: a shard snapshot still uploading (no manifest yet) that reuses SSTs
of a checkpoint no longer retained. Nodes reuse only the uploads of their latest confirmed
checkpoint, so keeping two or more checkpoints closes it unless confirmations lag a checkpoint.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterable

from stateserver import paths
from stateserver.checkpoints import CheckpointCatalog
from stateserver.errors import InvalidInput, Unavailable
from stateserver.objectstore import ObjectMeta, ObjectNotFound, ObjectStore, StoreUnavailable
from stateserver.v1 import checkpoint_pb2 as cpb

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GcItem:
    key: str
    size: int
    reason: str


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

    @property
    def bytes_deleted(self) -> int:
        return sum(item.size for item in self.deleted)


def collect_garbage(store: ObjectStore, namespace: str, *, retain: int, min_age: datetime.timedelta,
                    now: datetime.datetime, dry_run: bool) -> GcReport:
    if retain < 1:
        raise InvalidInput(f"retain must keep at least 1 checkpoint, not {retain}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (object stores report UTC times)")
    catalog = CheckpointCatalog(store)
    committed = catalog.committed_ids(namespace)
    retained, expired = committed[-retain:], committed[:-retain]
    latest = committed[-1] if committed else 0
    referenced: set[str] = set()
    for checkpoint_id in retained:
        referenced |= _keys_named(catalog.load(namespace, checkpoint_id))
    objects = _list_spelled(store, namespace)

    notes: list[str] = []
    young: list[GcItem] = []
    expired_metadata = {paths.checkpoint_metadata(namespace, c) for c in expired}
    # Expired metadata first, so that the checkpoints stop existing before their files go.
    garbage = [GcItem(key=meta.key, size=meta.size,
                      reason=f"metadata of checkpoint {parsed.checkpoint_id}, older than the {retain} retained")
               for meta, parsed in objects if meta.key in expired_metadata]
    in_flight = [(meta, parsed) for meta, parsed in objects if parsed.checkpoint_id > latest]
    protected = _named_by_young_manifests(store, in_flight, min_age, now, notes)
    for meta, parsed in objects:
        if meta.key in referenced or parsed.kind == "metadata":
            continue  # the metadata left is that of retained checkpoints, or expired and listed above
        if meta.key in protected:
            young.append(GcItem(key=meta.key, size=meta.size, reason="named by a shard manifest of a checkpoint "
                                f"that may still commit (younger than {min_age})"))
        elif parsed.checkpoint_id <= latest or now - meta.last_modified >= min_age:
            reason = _reason(parsed, latest, set(expired), set(retained), min_age)
            garbage.append(GcItem(key=meta.key, size=meta.size, reason=reason))
        else:
            young.append(GcItem(key=meta.key, size=meta.size, reason=f"checkpoint {parsed.checkpoint_id} may "
                                f"still commit and the object is younger than {min_age}"))
    if not dry_run:
        _delete(store, garbage)
    report = GcReport(namespace=namespace, dry_run=dry_run, retained=tuple(retained), expired=tuple(expired),
                      deleted=tuple(garbage), kept_young=tuple(young), notes=tuple(notes))
    log.info("garbage collected", extra={"namespace": namespace, "dry_run": dry_run, "objects": len(garbage),
                                         "bytes": report.bytes_deleted, "retained": list(retained)})
    return report


def _reason(parsed: paths.ParsedKey, latest: int, expired: set[int], retained: set[int],
            min_age: datetime.timedelta) -> str:
    checkpoint_id = parsed.checkpoint_id
    if checkpoint_id in expired:
        return f"{parsed.kind} file of expired checkpoint {checkpoint_id}, named by no retained checkpoint"
    if checkpoint_id in retained:
        return f"{parsed.kind} file of checkpoint {checkpoint_id} that its metadata does not name (an upload retried)"
    if checkpoint_id > latest:
        return f"{parsed.kind} file of checkpoint {checkpoint_id}, not committed, older than {min_age}"
    return (f"{parsed.kind} file of checkpoint {checkpoint_id}, which never committed and is subsumed by "
            f"checkpoint {latest}")


def _keys_named(metadata: cpb.CheckpointMetadata) -> set[str]:
    keys = {paths.checkpoint_metadata(metadata.namespace, metadata.checkpoint_id)}
    for handle in metadata.shards:
        keys |= _keys_of_handle(handle)
    return keys


def _keys_of_handle(handle: cpb.ShardSnapshotHandle) -> set[str]:
    keys = {handle.manifest_key}
    keys.update(f.object_key for f in handle.shared_files)
    keys.update(f.object_key for f in handle.private_files)
    return keys


def _named_by_young_manifests(store: ObjectStore, in_flight: Iterable[tuple[ObjectMeta, paths.ParsedKey]],
                              min_age: datetime.timedelta, now: datetime.datetime, notes: list[str]) -> set[str]:
    """What the durable shard snapshots of checkpoints possibly in flight name, SSTs they reuse
    from older checkpoints included: their commit would need every one."""
    keys: set[str] = set()
    for meta, parsed in in_flight:
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
        keys |= _keys_of_handle(handle)
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


def _delete(store: ObjectStore, items: Iterable[GcItem]) -> None:
    for item in items:
        try:
            store.delete(item.key)
        except StoreUnavailable as exc:
            # What is gone stays gone; the next run finds the rest unreferenced again.
            raise Unavailable(f"garbage collection stopped at {item.key}: {exc}") from exc

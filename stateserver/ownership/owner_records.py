"""Ownership records as garbage collection and commits read them: one listing, then pure functions.

A record ``<ns>/owners/<start>-<end>/<epoch>`` says that the writer at that epoch owns those key
groups (``ownership.py`` writes them). For each key group only the highest-epoch record covering
it matters; a record all of whose key groups are covered by newer records is superseded and can
go, since fencing only ever asks "is there a newer record?" and the newer ones stay.

A record's body is JSON; ``restored_from`` (a checkpoint id, or null for an empty start) says
which checkpoint the owner restored, whose files it may reuse until it commits a later one.
Records written before that field existed have no ``restored_from``; they read as None.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, MutableMapping

from stateserver.store import paths
from stateserver.protocol.errors import Fenced, Unavailable
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectNotFound, ObjectStore, StoreUnavailable


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredOwnerRecord:
    key: str
    key_groups: KeyGroupRange
    epoch: int


def list_owner_records(store: ObjectStore, namespace: str) -> list[StoredOwnerRecord]:
    """Every ownership record of the namespace: one listing of ``<ns>/owners``."""
    try:
        metas = list(store.list(paths.owners_prefix(namespace)))
    except StoreUnavailable as exc:
        raise Unavailable(f"cannot read shard ownership: {exc}") from exc
    records = []
    for meta in metas:
        parsed = paths.parse_owner_record(meta.key)
        if parsed is not None:
            records.append(StoredOwnerRecord(key=meta.key, key_groups=parsed[0], epoch=parsed[1]))
    return records


def check_not_fenced(records: Iterable[StoredOwnerRecord], namespace: str, key_groups: KeyGroupRange,
                     epoch: int) -> None:
    """Raise ``Fenced`` if a record newer than ``epoch`` covers any of ``key_groups``."""
    newer = [r for r in records if r.epoch > epoch and r.key_groups.overlaps(key_groups)]
    if newer:
        owner = max(newer, key=lambda r: r.epoch)
        raise Fenced(f"key groups {owner.key_groups} of {namespace!r} are owned by epoch {owner.epoch}; "
                     f"epoch {epoch} is fenced")


def superseded_records(records: Iterable[StoredOwnerRecord]) -> list[StoredOwnerRecord]:
    """The records every key group of which is covered by a record with a higher epoch."""
    ordered = sorted(records, key=lambda r: r.epoch, reverse=True)
    superseded = []
    for index, record in enumerate(ordered):
        newer = [r.key_groups for r in ordered[:index] if r.epoch > record.epoch]
        if _covers(newer, record.key_groups):
            superseded.append(record)
    return sorted(superseded, key=lambda r: r.key)


def current_records(records: Iterable[StoredOwnerRecord]) -> list[StoredOwnerRecord]:
    """The records that still own at least one key group."""
    records = list(records)
    gone = {r.key for r in superseded_records(records)}
    return [r for r in records if r.key not in gone]


def restored_from(store: ObjectStore, record: StoredOwnerRecord,
                  memo: MutableMapping[str, int | None] | None = None) -> int | None:
    """The checkpoint the record's owner restored, or None (an empty start, an older record format,
    or a record gone meanwhile). Records are never rewritten, so ``memo`` may keep the answers."""
    if memo is not None and record.key in memo:
        return memo[record.key]
    try:
        body = store.get(record.key)
    except ObjectNotFound:
        return None
    except StoreUnavailable as exc:
        raise Unavailable(f"cannot read ownership record {record.key}: {exc}") from exc
    try:
        value = json.loads(body).get("restored_from")
    except (ValueError, AttributeError):
        value = None  # unreadable: it protects nothing, and a newer record supersedes it
    checkpoint_id = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    if memo is not None:
        memo[record.key] = checkpoint_id
    return checkpoint_id


def _covers(ranges: list[KeyGroupRange], target: KeyGroupRange) -> bool:
    next_uncovered = target.start
    for candidate in sorted(ranges, key=lambda r: r.start):
        if candidate.start > next_uncovered:
            break
        next_uncovered = max(next_uncovered, candidate.end + 1)
        if next_uncovered > target.end:
            return True
    return next_uncovered > target.end

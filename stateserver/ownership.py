"""Shard ownership records in object storage: what fences a stale writer across nodes.

Opening a shard at epoch E writes ``<ns>/owners/<start>-<end>/<E>`` create-only. A writer is
stale once any record for overlapping key groups has a higher epoch; such a writer may
neither open the shard, nor make a snapshot durable, nor commit a checkpoint (invariant 5),
whichever node it talks to, including one that was cut off or restarted on old data.
"""
from __future__ import annotations

import dataclasses
import json

from stateserver import paths
from stateserver.errors import Fenced, Unavailable
from stateserver.keygroups import KeyGroupRange
from stateserver.objectstore import ObjectStore, StoreUnavailable


@dataclasses.dataclass(frozen=True)
class OwnerRecord:
    key_groups: KeyGroupRange
    epoch: int


class Ownership:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def records(self, namespace: str) -> list[OwnerRecord]:
        try:
            metas = list(self.store.list(paths.owners_prefix(namespace)))
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot read shard ownership: {exc}") from exc
        records = []
        for meta in metas:
            parsed = paths.parse_owner_record(meta.key)
            if parsed is not None:
                records.append(OwnerRecord(*parsed))
        return records

    def check(self, namespace: str, key_groups: KeyGroupRange, epoch: int) -> None:
        """Raise ``Fenced`` if a writer with a newer epoch owns any of these key groups."""
        newer = [r for r in self.records(namespace) if r.epoch > epoch and r.key_groups.overlaps(key_groups)]
        if newer:
            owner = max(newer, key=lambda r: r.epoch)
            raise Fenced(f"key groups {owner.key_groups} of {namespace!r} are owned by epoch {owner.epoch}; "
                         f"epoch {epoch} is fenced")

    def claim(self, namespace: str, key_groups: KeyGroupRange, epoch: int, node_id: str) -> None:
        """Record that the writer at ``epoch`` owns ``key_groups`` (on ``node_id``)."""
        self.check(namespace, key_groups, epoch)
        record = json.dumps({"epoch": epoch, "node": node_id}).encode()
        try:
            # Reopening at the same epoch (same writer, or its failover) finds the record there.
            self.store.put_if_absent(paths.owner_record(namespace, key_groups, epoch), record)
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot record shard ownership: {exc}") from exc
        self.check(namespace, key_groups, epoch)  # a newer writer may have claimed meanwhile

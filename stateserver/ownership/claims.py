"""Shard ownership records in object storage: what fences a stale writer across nodes.

Opening a shard at epoch E writes ``<ns>/owners/<start>-<end>/<E>`` create-only, holding
``{"epoch", "node", "owner_id", "restored_from"}``. Exactly one writer owns an epoch of a
key group (invariant 11): a claim whose create-only write finds a record of another owner
for overlapping key groups at the same epoch is refused, whichever node asks; the same
owner (a reconnect, or its failover to another node) finds its own record and goes on.
A writer is stale once any record for overlapping key groups has a higher epoch; such a
writer may neither open the shard, nor make a snapshot durable, nor commit a checkpoint
(invariant 5), whichever node it talks to, including one that was cut off or restarted on
old data. ``restored_from`` (the checkpoint the owner started from, or null) tells garbage
collection which base files a rolled-back owner still builds on.
"""
from __future__ import annotations

import dataclasses
import json

from stateserver.store import paths
from stateserver.protocol.errors import CorruptData, Fenced, Unavailable
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectNotFound, ObjectStore, StoreUnavailable
from stateserver.ownership.owner_records import StoredOwnerRecord, check_not_fenced, list_owner_records
from stateserver.ownership.shared_listing import SharedListing


@dataclasses.dataclass(frozen=True, kw_only=True)
class Owner:
    """What a record says about its writer."""

    owner_id: str
    node: str
    restored_from: int | None

    def encode(self, epoch: int) -> bytes:
        return json.dumps({"epoch": epoch, "node": self.node, "owner_id": self.owner_id,
                           "restored_from": self.restored_from}, sort_keys=True).encode()

    @staticmethod
    def decode(data: bytes) -> Owner:
        try:
            fields = json.loads(data)
            return Owner(owner_id=str(fields.get("owner_id", "")), node=str(fields.get("node", "")),
                         restored_from=fields.get("restored_from"))
        except (ValueError, AttributeError) as exc:
            raise CorruptData(f"unreadable shard ownership record: {exc}") from None


class Ownership:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        # Concurrent opens share listings, each from a LIST that started after it asked.
        self.listing: SharedListing[list[StoredOwnerRecord]] = SharedListing(
            lambda namespace: list_owner_records(store, namespace))

    def records(self, namespace: str) -> list[StoredOwnerRecord]:
        """Every record of the namespace written before this call (and maybe some since)."""
        return list(self.listing.get(namespace))

    def overlapping(self, namespace: str, key_groups: KeyGroupRange) -> list[StoredOwnerRecord]:
        """Every record of any epoch for key groups overlapping ``key_groups``."""
        return [r for r in self.records(namespace) if r.key_groups.overlaps(key_groups)]

    def check(self, namespace: str, key_groups: KeyGroupRange, epoch: int) -> None:
        """Raise ``Fenced`` if a writer with a newer epoch owns any of these key groups."""
        check_not_fenced(self.records(namespace), namespace, key_groups, epoch)

    def claim(self, namespace: str, key_groups: KeyGroupRange, epoch: int, node_id: str, *,
              owner_id: str = "", restored_from: int | None = None, checked: bool = False) -> None:
        """Record that the writer ``owner_id`` at ``epoch`` owns ``key_groups`` (on ``node_id``).

        Raises ``Fenced`` when a newer epoch owns some of the key groups, or another owner
        holds this epoch for some of them. ``checked``: the caller checked that just before
        (``check_owner``) and built nothing since, so the check before the write is skipped: it
        only spares the store a stale writer's record; the check after the write is what fences.
        """
        if not checked:
            self.check(namespace, key_groups, epoch)
        mine = Owner(owner_id=owner_id, node=node_id, restored_from=restored_from)
        key = paths.owner_record(namespace, key_groups, epoch)
        try:
            created = self.store.put_if_absent(key, mine.encode(epoch))
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot record shard ownership: {exc}") from exc
        # Whether this write created the record or found one: every record of this epoch for
        # overlapping key groups must be this owner's (two racing owners may both be refused),
        # and a newer writer may have claimed meanwhile. A record this call created is its own
        # (records are never rewritten): it needs no read.
        self.check_owner(namespace, key_groups, epoch, owner_id, created=key if created else None)

    def check_owner(self, namespace: str, key_groups: KeyGroupRange, epoch: int, owner_id: str, *,
                    created: str | None = None) -> None:
        """Raise ``Fenced`` if a newer epoch, or another owner at ``epoch``, holds some of the key groups."""
        records = self.records(namespace)
        check_not_fenced(records, namespace, key_groups, epoch)
        for record in records:
            if record.epoch == epoch and record.key_groups.overlaps(key_groups) and record.key != created:
                holder = self._read(namespace, record)
                if holder is not None and holder.owner_id != owner_id:
                    raise Fenced(f"epoch {epoch} of key groups {record.key_groups} of {namespace!r} is owned by "
                                 f"writer {holder.owner_id or '(anonymous)'} on node {holder.node or '?'}; "
                                 "use a newer epoch")

    def _read(self, namespace: str, record: StoredOwnerRecord) -> Owner | None:
        try:
            data = self.store.get(paths.owner_record(namespace, record.key_groups, record.epoch))
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot read shard ownership: {exc}") from exc
        except ObjectNotFound:
            return None  # collected meanwhile: a superseded record holds nothing
        return Owner.decode(data)



class StoreClaims:
    """One open's view of ownership (node.shard_open.OwnerClaims): the records for its key groups,
    and its claim."""

    def __init__(self, ownership: Ownership, namespace: str, key_groups: KeyGroupRange, epoch: int, node_id: str,
                 owner_id: str) -> None:
        self.ownership = ownership
        self.namespace = namespace
        self.key_groups = key_groups
        self.epoch = epoch
        self.node_id = node_id
        self.owner_id = owner_id

    def check(self) -> None:
        self.ownership.check_owner(self.namespace, self.key_groups, self.epoch, self.owner_id)

    def earlier_owners(self) -> list[str]:
        records = sorted(self.ownership.overlapping(self.namespace, self.key_groups), key=lambda r: -r.epoch)
        return [f"epoch {r.epoch} of {r.key_groups}" for r in records]

    def claim(self, restored_from: int | None, *, checked: bool = False) -> None:
        self.ownership.claim(self.namespace, self.key_groups, self.epoch, self.node_id, owner_id=self.owner_id,
                             restored_from=restored_from, checked=checked)

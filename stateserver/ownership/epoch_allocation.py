"""The next writer epoch of a namespace, allocated create-only in the snapshot store.

An allocation is an object ``<ns>/epochs/<epoch>`` (``paths.allocated_epoch``) written with
``put_if_absent``: of two callers that pick the same number exactly one creates it, and the other
tries the next number. The first number tried is one above both the highest allocation and the
highest epoch in an ownership record, so a namespace whose writers chose epochs themselves gets an
epoch above theirs too (superseded ownership records may be deleted, but per key group the newest
stays, so the highest epoch ever used is always still there). No counter lives anywhere else:
every node can allocate, and a node restart loses nothing.
"""
from __future__ import annotations

import datetime
import json
import uuid

from stateserver.ownership import owner_records

from stateserver.store import paths
from stateserver.protocol.epochs import MAX_EPOCH
from stateserver.protocol.errors import ResourceExhausted, Unavailable
from stateserver.store import ObjectStore, StoreUnavailable

# Each lost race means another caller got an epoch meanwhile; this many in a row is a storm.
MAX_ATTEMPTS = 64


def highest_allocated(store: ObjectStore, namespace: str) -> int:
    """The highest epoch allocated for ``namespace``, 0 if none (one listing of ``<ns>/epochs``)."""
    try:
        keys = [meta.key for meta in store.list(paths.epochs_prefix(namespace))]
    except StoreUnavailable as exc:
        raise Unavailable(f"cannot read the epochs of namespace {namespace!r}: {exc}") from exc
    epochs = [epoch for epoch in map(paths.parse_allocated_epoch, keys) if epoch is not None]
    return max(epochs, default=0)


def highest_used(store: ObjectStore, namespace: str) -> int:
    """The highest epoch allocated or named by an ownership record, 0 if none."""
    owned = max((record.epoch for record in owner_records.list_owner_records(store, namespace)), default=0)
    return max(highest_allocated(store, namespace), owned)


def allocate_epoch(store: ObjectStore, namespace: str, *, node_id: str = "") -> int:
    """A new epoch for ``namespace``, higher than any used so far and never handed out twice."""
    candidate = highest_used(store, namespace) + 1
    for _ in range(MAX_ATTEMPTS):
        if candidate > MAX_EPOCH:
            raise ResourceExhausted(f"namespace {namespace!r} has used every epoch up to {MAX_EPOCH}; "
                                    "no higher epoch can be allocated")
        # The body names this call, so a retried create whose answer was lost is told from a rival's.
        body = json.dumps({"epoch": candidate, "node": node_id, "allocation": uuid.uuid4().hex,
                           "allocated_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}).encode()
        try:
            created = store.put_if_absent(paths.allocated_epoch(namespace, candidate), body)
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot allocate an epoch of namespace {namespace!r}: {exc}") from exc
        if created:
            return candidate
        candidate += 1
    raise Unavailable(f"allocating an epoch of namespace {namespace!r} lost {MAX_ATTEMPTS} races in a row; retry")

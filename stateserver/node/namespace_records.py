"""Namespace definitions in the snapshot store, so that a node on an empty data directory (a
replaced disk, a new pod) learns a namespace instead of answering NOT_FOUND for it.

``<ns>/namespace.json`` (``paths.namespace_definition``) holds ``{"max_key_groups": N}``, written
create-only when the namespace is created: two nodes creating it at once with different key
groups cannot both win, and the loser is refused. The node's own ``namespace.json`` stays a
cache of it. Garbage collection never deletes it (``paths.parse_key`` does not spell it).
"""
from __future__ import annotations

import json
import logging

from stateserver.protocol.errors import AlreadyExists, CorruptData, Unavailable
from stateserver.store import ObjectNotFound, ObjectStore, StoreError, StoreUnavailable, paths

log = logging.getLogger(__name__)


class NamespaceRecords:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def lookup(self, namespace: str) -> int | None:
        """The namespace's key groups as recorded, or None if it was never recorded."""
        try:
            data = self.store.get(paths.namespace_definition(namespace))
        except ObjectNotFound:
            return None
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot look up namespace {namespace!r} in the snapshot store: {exc}") from exc
        return _decode(namespace, data)

    def record(self, namespace: str, max_key_groups: int) -> None:
        """Record the namespace create-only; AlreadyExists if it is recorded with other key groups."""
        body = json.dumps({"max_key_groups": max_key_groups}).encode()
        try:
            created = self.store.put_if_absent(paths.namespace_definition(namespace), body)
        except StoreUnavailable as exc:
            raise Unavailable(f"cannot record namespace {namespace!r} in the snapshot store: {exc}") from exc
        if not created:
            recorded = self.lookup(namespace)
            if recorded is not None and recorded != max_key_groups:
                raise AlreadyExists(f"namespace {namespace!r} exists with {recorded} key groups, not {max_key_groups}")


def _decode(namespace: str, data: bytes) -> int:
    try:
        value = json.loads(data)["max_key_groups"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"the definition of namespace {namespace!r} in the snapshot store is unreadable: "
                          f"{exc}") from None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CorruptData(f"the definition of namespace {namespace!r} in the snapshot store has key groups {value!r}")
    return value


def write_back(records: NamespaceRecords, known: dict[str, int]) -> list[str]:
    """Record in the store the namespaces this node knows (its data directory's ``namespace.json``
    files), for namespaces created before the store held their definitions; returns those the store
    could not record yet, for the caller to try again. That includes a store that answers but
    refuses (access denied, a bucket not made yet): nothing else records these namespaces, and an
    operator may fix the store without restarting the node. A namespace recorded with other key
    groups is logged, not changed: the store is the durable home, and this node's copy is wrong."""
    pending = []
    for namespace, max_key_groups in sorted(known.items()):
        try:
            records.record(namespace, max_key_groups)
        except Unavailable:
            pending.append(namespace)
        except StoreError as exc:  # not transient by itself: worth an operator's look
            log.error("the snapshot store refused this node's definition of a namespace; will try again",
                      extra={"namespace": namespace, "error": str(exc)})
            pending.append(namespace)
        except (AlreadyExists, CorruptData) as exc:
            log.error("this node's definition of a namespace disagrees with the snapshot store's",
                      extra={"namespace": namespace, "max_key_groups": max_key_groups, "error": str(exc)})
    return pending

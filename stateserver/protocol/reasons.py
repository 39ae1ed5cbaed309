"""The error reasons node and client share: one row per reason, its gRPC status code, the broader
reason it refines, and what it means. The one table both sides derive from.

A node error carries its reason (``StateServerError.reason`` in ``errors``); the node answers with
the reason's status code and sends the reason in trailing metadata (``REASON_METADATA_KEY``).
The client picks its exception class by the reason, and by the status code when a node sends none.
A reason's ``kind_of`` is its parent in both error trees: a side without a class of its own for a
reason uses the class of the broader one.
"""
from __future__ import annotations

import dataclasses

import grpc

REASON_METADATA_KEY = "stateserver-reason"

_Code = grpc.StatusCode


@dataclasses.dataclass(frozen=True)
class Reason:
    name: str
    status: grpc.StatusCode
    meaning: str
    kind_of: str | None = None  # the broader reason this one refines


REASONS: tuple[Reason, ...] = (
    Reason("internal", _Code.INTERNAL, "a bug or an unexpected failure on the node"),
    Reason("invalid-argument", _Code.INVALID_ARGUMENT, "the request is malformed; do not retry it as it is"),
    Reason("key-group-out-of-range", _Code.OUT_OF_RANGE, "a key's key group is not in the shard's range",
           "invalid-argument"),
    Reason("reply-too-large", _Code.INVALID_ARGUMENT, "the values read add up to more than one reply holds",
           "invalid-argument"),
    Reason("not-found", _Code.NOT_FOUND, "unknown namespace, state, shard or checkpoint"),
    Reason("already-exists", _Code.ALREADY_EXISTS, "created before with other parameters"),
    Reason("fenced", _Code.FAILED_PRECONDITION, "a newer writer epoch owns the shard; stop writing"),
    Reason("shard-not-open", _Code.FAILED_PRECONDITION, "open the shard (again) first"),
    Reason("restore-required", _Code.FAILED_PRECONDITION,
           "the local copy cannot be served as it is; reopen from a checkpoint (or empty)", "shard-not-open"),
    Reason("session-failed", _Code.FAILED_PRECONDITION,
           "a batch of this writer's session failed; reopen the writer from a checkpoint"),
    Reason("wrong-node", _Code.FAILED_PRECONDITION, "another node owns the shard; refresh routing and retry"),
    Reason("corrupt-data", _Code.DATA_LOSS, "stored data failed a check"),
    Reason("resource-exhausted", _Code.RESOURCE_EXHAUSTED,
           "the node is out of a resource (disk full); retry once it is freed"),
    Reason("unavailable", _Code.UNAVAILABLE, "transient (shutting down, overloaded); retry later"),
    Reason("out-of-order", _Code.ABORTED,
           "a write batch arrived before the batch it follows; resend it after that one", "unavailable"),
    Reason("shard-closed", _Code.UNAVAILABLE, "the shard was closed while the request waited; reopen or retry",
           "unavailable"),
)

BY_NAME: dict[str, Reason] = {reason.name: reason for reason in REASONS}


def status_of(name: str) -> grpc.StatusCode:
    """The status code a node answers an error of reason ``name`` with (INTERNAL if unknown)."""
    reason = BY_NAME.get(name)
    return reason.status if reason is not None else _Code.INTERNAL


def lineage(name: str) -> list[str]:
    """``name`` and the broader reasons it refines, narrowest first."""
    names = []
    reason: Reason | None = BY_NAME[name]
    while reason is not None:
        names.append(reason.name)
        reason = BY_NAME[reason.kind_of] if reason.kind_of is not None else None
    return names

"""The client's exceptions; gRPC errors are translated here and nowhere else.

    StateServerError                      base; ``retriable`` and ``refresh_routing`` say what to do
    ├── InvalidArgumentError              the request is malformed; fix it, do not retry
    │   └── KeyGroupOutOfRangeError       a key does not belong to the shard it was sent to
    ├── NotFoundError                     unknown namespace, state, shard or checkpoint
    ├── AlreadyExistsError                exists with other parameters
    ├── FencedError                       a newer writer owns the shard; stop this writer
    ├── ShardNotOpenError                 the node does not have the shard open; reopen it
    │   └── RestoreRequiredError          the shard's local copy cannot be served; reopen from a checkpoint (or empty)
    ├── SessionFailedError                a batch of this writer failed; reopen the writer from a checkpoint
    ├── WrongNodeError                    another node owns the shard; refresh routing, retry
    ├── DataCorruptionError               stored data failed a check
    ├── ResourceExhaustedError            the node is out of a resource (disk full); retry once freed
    ├── UnavailableError                  node down, overloaded or shutting down; retry
    │   ├── OutOfOrderError               a batch overtook its predecessor; resent by the client itself
    │   └── ShardClosedError              the shard was closed during the request; reopen or retry
    ├── SnapshotFailedError               a shard snapshot could not be made durable; abort the checkpoint
    └── InternalError                     a bug on the node

A node names its error's reason in trailing metadata; the class for each reason comes from the
table both sides share (``stateserver.protocol.reasons``): the class declaring the reason
(``_reason``), or that of the broader reason it refines. Without a reason, the status code decides.
"""
from __future__ import annotations

from typing import ClassVar

import grpc
import grpc.aio

from stateserver.protocol.reasons import REASON_METADATA_KEY, REASONS, lineage


class StateServerError(Exception):
    retriable = False
    refresh_routing = False
    _reason: ClassVar[str]  # the reason (protocol.reasons) a subclass stands for; ``reason`` is what a node sent

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class InvalidArgumentError(StateServerError):
    _reason = "invalid-argument"


class KeyGroupOutOfRangeError(InvalidArgumentError):
    _reason = "key-group-out-of-range"


class NotFoundError(StateServerError):
    _reason = "not-found"


class AlreadyExistsError(StateServerError):
    _reason = "already-exists"


class FencedError(StateServerError):
    _reason = "fenced"


class ShardNotOpenError(StateServerError):
    _reason = "shard-not-open"


class RestoreRequiredError(ShardNotOpenError):
    _reason = "restore-required"


class SessionFailedError(StateServerError):
    _reason = "session-failed"


class WrongNodeError(StateServerError):
    _reason = "wrong-node"
    retriable = True
    refresh_routing = True


class DataCorruptionError(StateServerError):
    _reason = "corrupt-data"


class UnavailableError(StateServerError):
    _reason = "unavailable"
    retriable = True


class OutOfOrderError(UnavailableError):
    _reason = "out-of-order"


class ShardClosedError(UnavailableError):
    _reason = "shard-closed"


class ResourceExhaustedError(StateServerError):
    _reason = "resource-exhausted"
    retriable = True


class SnapshotFailedError(StateServerError):
    pass


class InternalError(StateServerError):
    _reason = "internal"


def _classes_by_reason() -> dict[str, type[StateServerError]]:
    """Each reason of the table in ``protocol.reasons`` -> the class declaring it (``_reason``), or
    the class of the nearest broader reason (``reply-too-large`` -> InvalidArgumentError)."""
    declared: dict[str, type[StateServerError]] = {}
    pending: list[type[StateServerError]] = [StateServerError]
    while pending:
        error_type = pending.pop()
        pending.extend(error_type.__subclasses__())
        if "_reason" in vars(error_type):
            declared[error_type._reason] = error_type
    by_reason = {}
    for reason in REASONS:  # a reason with no class at all goes by its status code (tests/test_reasons.py)
        name = next((name for name in lineage(reason.name) if name in declared), None)
        if name is not None:
            by_reason[reason.name] = declared[name]
    return by_reason


_BY_REASON: dict[str, type[StateServerError]] = _classes_by_reason()
_BY_CODE: dict[grpc.StatusCode, type[StateServerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: KeyGroupOutOfRangeError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: ShardNotOpenError,
    grpc.StatusCode.DATA_LOSS: DataCorruptionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: UnavailableError,  # gRPC's own (message too large) unless the reason says
    grpc.StatusCode.ABORTED: UnavailableError,
    grpc.StatusCode.CANCELLED: UnavailableError,
}


# Errors that carry a status: the sync client's calls, and grpc.aio's (which are not grpc.Call).
_CALL_ERRORS = (grpc.Call, grpc.aio.AioRpcError)


def translate_rpc_error(error: grpc.RpcError, *, address: str) -> StateServerError:
    is_call = isinstance(error, _CALL_ERRORS)
    code = error.code() if is_call else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    details = (error.details() if is_call else None) or str(error)  # type: ignore[attr-defined]
    reason = ""
    if is_call:
        for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
            if key == REASON_METADATA_KEY:
                reason = str(value)
    error_type = _BY_REASON.get(reason) or _BY_CODE.get(code, InternalError)
    return error_type(f"{details} (node {address}, {code.name})", code=code, reason=reason)

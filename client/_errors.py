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
"""
from __future__ import annotations

import grpc
import grpc.aio

REASON_METADATA_KEY = "stateserver-reason"


class StateServerError(Exception):
    retriable = False
    refresh_routing = False

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class InvalidArgumentError(StateServerError):
    pass


class KeyGroupOutOfRangeError(InvalidArgumentError):
    pass


class NotFoundError(StateServerError):
    pass


class AlreadyExistsError(StateServerError):
    pass


class FencedError(StateServerError):
    pass


class ShardNotOpenError(StateServerError):
    pass


class RestoreRequiredError(ShardNotOpenError):
    pass


class SessionFailedError(StateServerError):
    pass


class WrongNodeError(StateServerError):
    retriable = True
    refresh_routing = True


class DataCorruptionError(StateServerError):
    pass


class UnavailableError(StateServerError):
    retriable = True


class OutOfOrderError(UnavailableError):
    pass


class ShardClosedError(UnavailableError):
    pass


class ResourceExhaustedError(StateServerError):
    retriable = True


class SnapshotFailedError(StateServerError):
    pass


class InternalError(StateServerError):
    pass


_BY_REASON: dict[str, type[StateServerError]] = {
    "fenced": FencedError,
    "shard-not-open": ShardNotOpenError,
    "wrong-node": WrongNodeError,
    "key-group-out-of-range": KeyGroupOutOfRangeError,
    "restore-required": RestoreRequiredError,
    "session-failed": SessionFailedError,
    "out-of-order": OutOfOrderError,
    "shard-closed": ShardClosedError,
    "resource-exhausted": ResourceExhaustedError,
}
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

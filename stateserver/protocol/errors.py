"""The node's errors, grouped by what the caller should do.

    StateServerError                 internal: a bug or an unexpected failure
    ├── InvalidInput                 the request is malformed; do not retry it as it is
    │   ├── KeyGroupOutOfRange       a key's key group is not in the shard's range
    │   └── ReplyTooLarge            the values read add up to more than one reply holds
    ├── NotFound                     unknown namespace, state, shard or checkpoint
    ├── AlreadyExists                created before with other parameters
    ├── Fenced                       a newer writer epoch owns the shard; stop writing
    ├── ShardNotOpen                 open the shard (again) first
    │   └── RestoreRequired          the local copy cannot be served as it is; reopen from a checkpoint (or empty)
    ├── SessionFailed                a batch of this writer's session failed; reopen the writer from a checkpoint
    ├── WrongNode                    another node owns the shard; refresh routing and retry
    ├── CorruptData                  stored data failed a check
    ├── ResourceExhausted            the node is out of a resource (disk full); retry once it is freed
    └── Unavailable                  transient (shutting down, overloaded); retry later
        ├── OutOfOrder               a write batch arrived before the batch it follows; resend it after that one
        └── ShardClosed              the shard was closed while the request waited; reopen or retry

Each kind's ``reason`` is a row of the table in ``reasons``, which gives its gRPC status code; the
node translates at one boundary (``node/state_service.py``), and the reason travels in trailing
metadata so that clients can tell the kinds apart.
"""
from __future__ import annotations


class StateServerError(Exception):
    reason = "internal"


class InvalidInput(StateServerError):
    reason = "invalid-argument"


class KeyGroupOutOfRange(InvalidInput):
    reason = "key-group-out-of-range"


class ReplyTooLarge(InvalidInput):
    reason = "reply-too-large"


class NotFound(StateServerError):
    reason = "not-found"


class AlreadyExists(StateServerError):
    reason = "already-exists"


class Fenced(StateServerError):
    reason = "fenced"


class ShardNotOpen(StateServerError):
    reason = "shard-not-open"


class RestoreRequired(ShardNotOpen):
    reason = "restore-required"


class SessionFailed(StateServerError):
    reason = "session-failed"


class WrongNode(StateServerError):
    reason = "wrong-node"


class CorruptData(StateServerError):
    reason = "corrupt-data"


class ResourceExhausted(StateServerError):
    reason = "resource-exhausted"


class Unavailable(StateServerError):
    reason = "unavailable"


class OutOfOrder(Unavailable):
    reason = "out-of-order"


class ShardClosed(Unavailable):
    reason = "shard-closed"

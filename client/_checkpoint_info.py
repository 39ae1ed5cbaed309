"""What a client learns about a committed checkpoint, and the checks it makes before a commit."""
from __future__ import annotations

import dataclasses

from stateserver.client._errors import InvalidArgumentError
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

# The nodes' bound (stateserver.snapshot.catalog.MAX_OPERATOR_METADATA_BYTES), checked here too so an
# oversized blob fails at the call, before any request.
MAX_CHECKPOINT_METADATA_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointInfo:
    """A committed checkpoint: its id and the operator's metadata committed with it."""

    checkpoint_id: int
    metadata: bytes
    committed_at_millis: int

    @classmethod
    def from_proto(cls, reply: cpb.DescribeCheckpointResponse) -> CheckpointInfo:
        return cls(checkpoint_id=reply.checkpoint_id, metadata=bytes(reply.operator_metadata),
                   committed_at_millis=reply.committed_at_millis)


def checked_metadata(metadata: bytes) -> bytes:
    if not isinstance(metadata, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"checkpoint metadata must be bytes, not {type(metadata).__name__}")
    blob = bytes(metadata)
    if len(blob) > MAX_CHECKPOINT_METADATA_BYTES:
        raise InvalidArgumentError(f"checkpoint metadata is {len(blob)} bytes; the limit is "
                                   f"{MAX_CHECKPOINT_METADATA_BYTES} (1 MiB)")
    return blob


def describe_request(namespace: str, checkpoint: int | str) -> cpb.DescribeCheckpointRequest:
    if checkpoint == "latest":
        return cpb.DescribeCheckpointRequest(namespace=namespace, latest=True)
    if isinstance(checkpoint, int) and not isinstance(checkpoint, bool) and checkpoint > 0:
        return cpb.DescribeCheckpointRequest(namespace=namespace, checkpoint_id=checkpoint)
    raise InvalidArgumentError(f"checkpoint takes an id (from 1) or 'latest', not {checkpoint!r}")

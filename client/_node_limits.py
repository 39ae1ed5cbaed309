"""What a node accepts, as it reports in NodeInfo; the client checks keys and sizes batches by it.

Sans-I/O: the sync and asyncio sessions both use it. A key or value over the node's limit is
refused at the call that passed it, before anything is buffered, so that it cannot fail a
batch (and with it the writer's session) later.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from stateserver.client._errors import InvalidArgumentError
from stateserver.protocol.v1 import state_pb2 as pb

# Bytes a batch's message spends per operation beyond its keys and values: the op code and the
# length varints of key, value and map key, and a state index.
OVERHEAD_PER_OP = 16
# Room in a message for everything that is not per operation: the shard, state names, field tags.
MESSAGE_MARGIN = 64 << 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeLimits:
    max_key_bytes: int = sys.maxsize
    max_value_bytes: int = sys.maxsize
    max_batch_ops: int = sys.maxsize
    max_message_bytes: int = 64 << 20  # negotiated: the smaller of the node's and the client's
    stored_form: bool = False  # the node takes keys and values as it stores them

    @classmethod
    def from_node_info(cls, reply: pb.NodeInfoResponse, client_max_message_bytes: int) -> NodeLimits:
        """The limits a node reports, or (a node too old to report them) the client's message size."""
        if not reply.HasField("limits"):
            return cls(max_message_bytes=client_max_message_bytes)
        limits = reply.limits
        return cls(max_key_bytes=limits.max_key_bytes or sys.maxsize,
                   max_value_bytes=limits.max_value_bytes or sys.maxsize,
                   max_batch_ops=limits.max_batch_ops or sys.maxsize,
                   max_message_bytes=min(limits.max_message_bytes or client_max_message_bytes,
                                         client_max_message_bytes),
                   stored_form=limits.stored_form)

    @property
    def max_request_bytes(self) -> int:
        """The most a batch's keys, values and per-operation overhead may add up to."""
        return max(self.max_message_bytes - MESSAGE_MARGIN, 1)

    def check_write(self, key: bytes, value: bytes, map_key: bytes = b"", *, needs_map_key: bool = False) -> None:
        if not key:
            raise InvalidArgumentError("keys must not be empty")
        if len(key) > self.max_key_bytes:
            raise InvalidArgumentError(f"a key of {len(key)} bytes exceeds the node's limit of {self.max_key_bytes}")
        if len(value) > self.max_value_bytes:
            raise InvalidArgumentError(f"a value of {len(value)} bytes exceeds the node's limit of "
                                       f"{self.max_value_bytes}")
        if needs_map_key and not map_key:
            raise InvalidArgumentError("map keys must not be empty")
        if len(map_key) > self.max_key_bytes:
            raise InvalidArgumentError(f"a map key of {len(map_key)} bytes exceeds the node's limit of "
                                       f"{self.max_key_bytes}")

    def check_writes(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """``check_write`` for many operations, as whole-list operations."""
        if not keys:
            return
        if not all(keys):
            raise InvalidArgumentError("keys must not be empty")
        longest = max(map(len, keys))
        if longest > self.max_key_bytes:
            raise InvalidArgumentError(f"a key of {longest} bytes exceeds the node's limit of {self.max_key_bytes}")
        largest = max(map(len, values), default=0)
        if largest > self.max_value_bytes:
            raise InvalidArgumentError(f"a value of {largest} bytes exceeds the node's limit of {self.max_value_bytes}")


def operation_bytes(key: bytes, value: bytes, map_key: bytes = b"") -> int:
    """What one operation adds to a batch's message, as ``WriteBuffer.byte_size`` counts it."""
    return len(key) + len(value) + len(map_key) + OVERHEAD_PER_OP

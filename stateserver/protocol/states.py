"""State descriptors: a named piece of state with a kind, a merge operator and a TTL."""
from __future__ import annotations

import dataclasses
import enum
import json

from stateserver.protocol import merge_operators
from stateserver.protocol.names import check_name
from stateserver.protocol.v1 import state_pb2 as pb


class StateKind(enum.IntEnum):
    # Numbers match stateserver.v1.StateKind on the wire.
    VALUE = 1
    LIST = 2
    MAP = 3
    AGGREGATING = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateDescriptor:
    name: str
    kind: StateKind
    merge_operator: str = ""
    ttl_ms: int = 0

    def __post_init__(self) -> None:
        check_name("state", self.name)
        if self.kind is StateKind.AGGREGATING:
            merge_operators.get_merge_operator(self.merge_operator)
        elif self.merge_operator:
            raise ValueError(f"state {self.name!r}: only aggregating state takes a merge operator")
        if self.ttl_ms < 0:
            raise ValueError(f"state {self.name!r}: ttl must not be negative")

    @property
    def column_family(self) -> str:
        return "state." + self.name

    def compatible_with(self, other: StateDescriptor) -> bool:
        """Same kind and merge operator: the stored bytes mean the same thing."""
        return self.kind is other.kind and self.merge_operator == other.merge_operator

    def to_json(self) -> bytes:
        return json.dumps(
            {"name": self.name, "kind": self.kind.name, "merge_operator": self.merge_operator, "ttl_ms": self.ttl_ms}
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StateDescriptor:
        fields = json.loads(data)
        return cls(
            name=fields["name"],
            kind=StateKind[fields["kind"]],
            merge_operator=fields["merge_operator"],
            ttl_ms=int(fields["ttl_ms"]),
        )

    def to_proto(self) -> pb.StateDescriptor:
        return pb.StateDescriptor(name=self.name, kind=int(self.kind),  # type: ignore[arg-type]
                                  merge_operator=self.merge_operator, ttl_ms=self.ttl_ms)

    @classmethod
    def from_proto(cls, message: pb.StateDescriptor) -> StateDescriptor:
        """Raises ``ValueError`` for a descriptor that is not valid."""
        if message.kind not in StateKind._value2member_map_:
            raise ValueError(f"state {message.name!r} has no valid kind")
        return cls(name=message.name, kind=StateKind(message.kind),
                   merge_operator=message.merge_operator, ttl_ms=message.ttl_ms)

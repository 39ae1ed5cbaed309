"""Decoded batches, as the node's storage code sees them (the service decodes the wire)."""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence


class WriteOp(enum.IntEnum):
    # Numbers match stateserver.v1.WriteOp on the wire.
    PUT = 1
    DELETE = 2
    MERGE = 3
    LIST_APPEND = 4
    MAP_PUT = 5
    MAP_REMOVE = 6
    CLEAR = 7


class ReadOp(enum.IntEnum):
    GET = 1
    GET_LIST = 2
    MAP_GET = 3
    MAP_CONTAINS = 4


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """``ops[i]`` applies to ``keys[i]`` of state ``states[state_indexes[i]]``.

    ``state_indexes`` empty means every operation uses ``states[0]``; ``values`` and
    ``map_keys`` empty mean no operation carries one.
    """

    ops: bytes
    states: Sequence[str]
    state_indexes: Sequence[int]
    keys: Sequence[bytes]
    values: Sequence[bytes] = ()
    map_keys: Sequence[bytes] = ()

    def state_of(self, index: int) -> str:
        return self.states[self.state_indexes[index]] if self.state_indexes else self.states[0]

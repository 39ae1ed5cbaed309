"""A read's answer combined with the writes the node has not applied yet (read-your-writes).

The node's value is taken as it is after every batch it applied; each buffer still unsent
(oldest first) is then applied to it as the node will apply it, through the buffer's overlay.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stateserver.client._buffer import WriteBuffer, resolve_list, resolve_map_entry, resolve_value
from stateserver.protocol import wire
from stateserver.protocol.operations import ReadOp

_MAP_READS = (ReadOp.MAP_GET, ReadOp.MAP_CONTAINS)


def resolve_read(op: ReadOp, state: str, key: bytes, map_key: bytes, stored: bytes | None, merge_operator: str,
                 unsent: Sequence[WriteBuffer]) -> Any:
    """bytes or None; for GET_LIST the list of elements."""
    value: Any = stored
    if op is ReadOp.GET_LIST:
        value = wire.unpack_list(stored) if stored is not None else []
        for buffer in unsent:
            value = resolve_list(buffer.overlay(state, key), lambda known=value: known)
    elif op in _MAP_READS:
        for buffer in unsent:
            value = resolve_map_entry(buffer.overlay(state, key), map_key, lambda known=value: known)
    else:
        for buffer in unsent:
            value = resolve_value(buffer.overlay(state, key), lambda known=value: known, merge_operator)
    return value

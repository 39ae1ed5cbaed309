"""The TTL rule of a cleanup: which stored values are dropped.

A value is dropped when its header says it expires (``layout``: 0x01 + expiry in ms) at or before
the cut-off, the same comparison a read makes (``layout.decode_value``), so a cleanup at time T
removes exactly what a read at T would no longer see. The state's descriptor is not consulted:
TTL can be added to a state after values were written, and a value carries its own expiry.
"""
from __future__ import annotations

import struct

from stateserver.shard import layout
from stateserver.protocol.errors import CorruptData


def is_expired(stored_value: bytes, expire_before_ms: int) -> bool:
    try:
        expires_at = layout.expires_at(stored_value)
    except (IndexError, struct.error):
        raise CorruptData(f"a stored value of {len(stored_value)} bytes is too short for its header") from None
    return expires_at is not None and expires_at <= expire_before_ms

"""How keyed state is spelled in RocksDB: stored keys and stored values.

Every stored key starts with its key group in two big-endian bytes, so a key-group range
is a key range (restore with rescaling cuts shards along it). Each state lives in its own
column family, so the state name is not part of the key.

    value / aggregating   kg(2) | key
    list element          kg(2) | len(key) u32 BE | key | position u64 BE
    map entry             kg(2) | len(key) u32 BE | key | map key

A stored value starts with a header byte so that TTL can be added to a state later
without rewriting what is stored: 0x00 plain, 0x01 followed by the expiry time
(milliseconds since the epoch, u64 BE).
"""
from __future__ import annotations

import struct

from stateserver.protocol.keygroups import key_group_prefix

LIST_POSITION_BYTES = 8
_U32_BE = struct.Struct(">I")
_U64_BE = struct.Struct(">Q")

HEADER_PLAIN = b"\x00"
HEADER_EXPIRES = 0x01
_EXPIRING_HEADER_BYTES = 1 + 8


def value_key(key_group: int, key: bytes) -> bytes:
    return key_group_prefix(key_group) + key


def composite_prefix(key_group: int, key: bytes) -> bytes:
    """The prefix of every list element or map entry stored under ``key``."""
    return key_group_prefix(key_group) + _U32_BE.pack(len(key)) + key


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("a prefix of only 0xff bytes has no end")
    return stripped[:-1] + bytes([stripped[-1] + 1])


def list_position(position: int) -> bytes:
    return _U64_BE.pack(position)


def decode_list_position(data: bytes) -> int:
    return int(_U64_BE.unpack(data)[0])


def encode_value(payload: bytes, expires_at_ms: int | None = None) -> bytes:
    if expires_at_ms is None:
        return HEADER_PLAIN + payload
    return bytes([HEADER_EXPIRES]) + _U64_BE.pack(expires_at_ms) + payload


def decode_value(stored: bytes, now_ms: int) -> bytes | None:
    """The payload of a stored value, or ``None`` if it has expired."""
    header = stored[0]
    if header == 0:
        return stored[1:]
    if header == HEADER_EXPIRES:
        (expires_at_ms,) = _U64_BE.unpack_from(stored, 1)
        return None if expires_at_ms <= now_ms else stored[_EXPIRING_HEADER_BYTES:]
    raise ValueError(f"unknown value header 0x{header:02x}")


def expires_at(stored: bytes) -> int | None:
    if stored[0] == HEADER_EXPIRES:
        return int(_U64_BE.unpack_from(stored, 1)[0])
    return None

"""Named merge operators for aggregating state.

RocksDB's merge operator is not exposed by the binding, so the node folds operands in
Python: read the current value, fold the batch's operands for that key in memory, write
once. The single writer per shard makes this read-modify-write safe without locks.
The client uses the same functions to show a writer its own unflushed merges.

Integers are signed 64-bit little-endian; ``list_append`` values use ``wire.pack_list``.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from stateserver.protocol import wire

_I64 = struct.Struct("<q")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

Fold = Callable[[bytes | None, Sequence[bytes]], bytes]


def encode_int64(value: int) -> bytes:
    return _I64.pack(value)


def decode_int64(data: bytes) -> int:
    if len(data) != 8:
        raise ValueError(f"an int64 operand has 8 bytes, got {len(data)}")
    return int(_I64.unpack(data)[0])


def _wrap_int64(value: int) -> int:
    # Two's-complement wrap-around, as a Java long or a RocksDB uint64add would.
    return (value - _INT64_MIN) % (1 << 64) + _INT64_MIN


def _sum_int64(current: bytes | None, operands: Sequence[bytes]) -> bytes:
    total = decode_int64(current) if current is not None else 0
    for operand in operands:
        total += decode_int64(operand)
    return encode_int64(_wrap_int64(total))


def _extreme(pick: Callable[[int, int], int]) -> Fold:
    def fold(current: bytes | None, operands: Sequence[bytes]) -> bytes:
        values = [decode_int64(o) for o in operands]
        if current is not None:
            values.append(decode_int64(current))
        result = values[0]
        for value in values[1:]:
            result = pick(result, value)
        return encode_int64(result)

    return fold


def _list_append(current: bytes | None, operands: Sequence[bytes]) -> bytes:
    return (current or b"") + wire.pack_list(operands)


MERGE_OPERATORS: dict[str, Fold] = {
    "sum_int64": _sum_int64,
    "max_int64": _extreme(max),
    "min_int64": _extreme(min),
    "list_append": _list_append,
}

_OPERAND_CHECKS: dict[str, Callable[[bytes], object]] = {
    "sum_int64": decode_int64,
    "max_int64": decode_int64,
    "min_int64": decode_int64,
}


def get_merge_operator(name: str) -> Fold:
    try:
        return MERGE_OPERATORS[name]
    except KeyError:
        known = ", ".join(sorted(MERGE_OPERATORS))
        raise ValueError(f"unknown merge operator {name!r}; known: {known}") from None


def check_operand(name: str, operand: bytes) -> None:
    """Raise ``ValueError`` if ``operand`` is not valid input for the operator."""
    check = _OPERAND_CHECKS.get(name)
    if check is not None:
        check(operand)

"""Named merge operators: the folds the node runs (and the client repeats for its buffered merges)."""
from __future__ import annotations

import random

import pytest

from stateserver.protocol import merge_operators

from stateserver.protocol import wire
from stateserver.protocol.merge_operators import check_operand, decode_int64, encode_int64, get_merge_operator

INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)


def fold(name: str, current: int | None, operands: list[int]) -> int:
    result = get_merge_operator(name)(None if current is None else encode_int64(current), [encode_int64(o) for o in operands])
    return decode_int64(result)


def test_the_operators_are_the_documented_ones() -> None:
    assert set(merge_operators.MERGE_OPERATORS) == {"sum_int64", "max_int64", "min_int64", "list_append"}


def test_int64_encoding_is_signed_little_endian() -> None:
    assert encode_int64(1) == b"\x01" + b"\x00" * 7
    assert encode_int64(-1) == b"\xff" * 8
    assert decode_int64(encode_int64(INT64_MIN)) == INT64_MIN
    for bad in (b"", b"\x00" * 7, b"\x00" * 9):
        with pytest.raises(ValueError, match="8 bytes"):
            decode_int64(bad)


def test_sum_int64() -> None:
    assert fold("sum_int64", None, [5]) == 5
    assert fold("sum_int64", None, [5, -12, 3]) == -4
    assert fold("sum_int64", 10, [-3, -3]) == 4
    assert fold("sum_int64", -10, []) == -10


@pytest.mark.parametrize(("current", "operands", "expected"), [
    (INT64_MAX, [1], INT64_MIN),
    (INT64_MIN, [-1], INT64_MAX),
    (None, [INT64_MAX, INT64_MAX], -2),
    (None, [INT64_MIN, INT64_MIN], 0),
    (INT64_MAX, [1, -1], INT64_MAX),  # wraps on the way and back: as Java's long arithmetic
])
def test_sum_int64_wraps_around(current: int | None, operands: list[int], expected: int) -> None:
    assert fold("sum_int64", current, operands) == expected


def test_max_and_min_int64() -> None:
    assert fold("max_int64", None, [-5, -3, -9]) == -3  # an absent value is not 0
    assert fold("min_int64", None, [5, 3, 9]) == 3
    assert fold("max_int64", 7, [1, 2]) == 7
    assert fold("min_int64", -7, [1, 2]) == -7
    assert fold("max_int64", INT64_MIN, [INT64_MIN]) == INT64_MIN
    assert fold("min_int64", INT64_MAX, [INT64_MAX]) == INT64_MAX


def test_list_append() -> None:
    append = get_merge_operator("list_append")
    assert wire.unpack_list(append(None, [b"a", b""])) == [b"a", b""]
    assert wire.unpack_list(append(wire.pack_list([b"x"]), [b"y", b"z"])) == [b"x", b"y", b"z"]


@pytest.mark.parametrize("name", ["sum_int64", "max_int64", "min_int64", "list_append"])
def test_folding_in_pieces_equals_folding_at_once(name: str) -> None:
    """The node folds batch by batch and the client folds its buffer onto the node's value:
    both must give what one fold of every operand gives."""
    chooser = random.Random(name)
    for _ in range(50):
        if name == "list_append":
            operands = [chooser.randbytes(chooser.randrange(4)) for _ in range(chooser.randrange(1, 12))]
        else:
            operands = [encode_int64(chooser.choice([INT64_MIN, INT64_MAX, 0, chooser.randrange(INT64_MIN, INT64_MAX)]))
                        for _ in range(chooser.randrange(1, 12))]
        operator = get_merge_operator(name)
        at_once = operator(None, operands)
        cut = chooser.randrange(1, len(operands) + 1)
        in_pieces = operator(operator(None, operands[:cut]), operands[cut:]) if operands[cut:] else operator(None, operands[:cut])
        assert in_pieces == at_once


def test_operand_checks() -> None:
    for name in ("sum_int64", "max_int64", "min_int64"):
        check_operand(name, encode_int64(-1))
        for bad in (b"", b"1", b"\x00" * 9):
            with pytest.raises(ValueError):
                check_operand(name, bad)
    check_operand("list_append", b"")  # any bytes are an element
    check_operand("list_append", b"\x00" * 100)


def test_unknown_operator() -> None:
    with pytest.raises(ValueError, match="unknown merge operator 'concat'.*list_append"):
        get_merge_operator("concat")

"""The client's stored-form packing (``client/_packing.py``) against the protocol's own functions:
keys prefixed with key groups the router computed, and reply values cut out of their headers."""
from __future__ import annotations

import random

import pytest

from stateserver.client import _packing
from stateserver.protocol import stored_form
from stateserver.protocol.keygroups import key_group_for

MAX_KEY_GROUPS = 1000


@pytest.mark.parametrize("lengths", [(16,), (1, 40), (300,), (0, 5000)])
def test_keys_packed_with_known_key_groups_are_the_protocols_stored_keys(lengths: tuple[int, ...]) -> None:
    chosen = random.Random(7)
    keys = [chosen.randbytes(chosen.choice(lengths) or 1) for _ in range(777)]
    key_groups = [key_group_for(key, MAX_KEY_GROUPS) for key in keys]
    assert _packing.stored_keys(keys, key_groups) == stored_form.stored_keys(keys, MAX_KEY_GROUPS)


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 1000, 2049])
@pytest.mark.parametrize("value_bytes", [0, 1, 100, 255, 256, 5000])
def test_reply_values_of_one_length_are_cut_as_the_protocol_cuts_them(count: int, value_bytes: int) -> None:
    """Chunked layouts: counts below, at and across the 64-value chunk, values up to past the
    longest laid out (5000 bytes go through stored_form)."""
    chosen = random.Random(count * 7919 + value_bytes)
    values = [chosen.randbytes(value_bytes) for _ in range(count)]
    blob, lengths = stored_form.stored_values(values)
    assert _packing.plain_values(blob, lengths) == values == stored_form.plain_values(blob, lengths)


def test_reply_values_of_several_lengths_are_cut_too() -> None:
    chosen = random.Random(3)
    values = [chosen.randbytes(chosen.randrange(0, 300)) for _ in range(1500)]
    blob, lengths = stored_form.stored_values(values)
    assert _packing.plain_values(blob, lengths) == values


@pytest.mark.parametrize("blob", [b"\x00abc\x00ab", b"\x00abc\x00abcd"])
def test_reply_lengths_that_do_not_add_up_are_an_error(blob: bytes) -> None:
    with pytest.raises(ValueError, match="add up"):
        _packing.plain_values(blob, [4, 4])

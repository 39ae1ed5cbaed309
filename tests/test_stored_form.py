"""The stored-form packing (protocol/stored_form.py): what the client packs, the node reads back."""
from __future__ import annotations

import pytest

from stateserver.protocol import stored_form, wire
from stateserver.protocol.keygroups import key_group_for


# Fixed-size items past wire.UNIFORM_CHUNK are cut by the per-format layouts: with a partial last
# chunk, in whole chunks only, and with a single item past one chunk.
@pytest.mark.parametrize("sizes", [[16] * 50, [1, 5, 300, 2, 70_000, 3], [255, 256, 257], [16] * 1000, [16] * 512,
                                   [3] * 257, [300] * 300])
def test_keys_and_values_round_trip(sizes: list[int]) -> None:
    keys = [bytes([i % 251 + 1]) * size for i, size in enumerate(sizes)]
    blob, lengths = stored_form.stored_keys(keys, 1000)
    assert stored_form.key_groups(blob, lengths) == tuple(key_group_for(k, 1000) for k in keys)
    assert stored_form.raw_keys(blob, lengths) == keys
    assert stored_form.key_groups_and_raw_keys(blob, lengths) == (stored_form.key_groups(blob, lengths), tuple(keys))
    assert wire.unpack(blob, lengths) == [g.to_bytes(2, "big") + k for g, k in
                                          zip(stored_form.key_groups(blob, lengths), keys)]
    values = [b"v" * (size - 1) for size in sizes]
    blob, lengths = stored_form.stored_values(values)
    assert stored_form.headers(blob, lengths) == (0,) * len(values)
    assert stored_form.plain_values(blob, lengths) == values


def test_items_shorter_than_their_head_and_lengths_that_do_not_add_up() -> None:
    with pytest.raises(ValueError, match="shorter"):
        stored_form.key_groups(b"\x00\x01a\x00", [3, 1])
    with pytest.raises(ValueError, match="shorter"):
        stored_form.headers(b"\x00a", [2, 0])
    with pytest.raises(ValueError, match="add up"):
        stored_form.key_groups(b"\x00\x01ab", [3])
    with pytest.raises(ValueError, match="add up"):
        stored_form.plain_values(b"\x00ab", [4])


def test_fixed_size_items_past_a_chunk_are_checked_as_others() -> None:
    count = wire.UNIFORM_CHUNK + 1
    with pytest.raises(ValueError, match="shorter"):
        stored_form.key_groups(b"\x00" * count, [1] * count)
    with pytest.raises(ValueError, match="shorter"):
        stored_form.headers(b"", [0] * count)
    with pytest.raises(ValueError, match="add up"):
        stored_form.key_groups_and_raw_keys(b"\x00\x01a" * count + b"!", [3] * count)
    with pytest.raises(ValueError, match="add up"):
        stored_form.plain_values(b"\x00a" * (count - 1), [2] * count)

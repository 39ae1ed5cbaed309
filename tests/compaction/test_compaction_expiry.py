"""The TTL rule of a cleanup is the one reads apply: expired at or before the cut-off."""
from __future__ import annotations

import pytest

from stateserver.compaction.expiry import is_expired
from stateserver.shard import layout
from stateserver.protocol.errors import CorruptData


def test_a_value_expiring_at_the_cut_off_is_dropped_and_plain_values_never_are() -> None:
    for expires_at, cutoff in ((100, 99), (100, 100), (100, 101)):
        stored = layout.encode_value(b"payload", expires_at)
        assert is_expired(stored, cutoff) == (layout.decode_value(stored, cutoff) is None)
    assert not is_expired(layout.encode_value(b"payload"), 1 << 62)


def test_a_value_too_short_for_its_header_is_corrupt() -> None:
    for damaged in (b"", b"\x01\x00\x00"):
        with pytest.raises(CorruptData, match="too short for its header"):
            is_expired(damaged, 0)

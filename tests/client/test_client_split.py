"""Batched calls over a writer of many shards: keys split by shard with whole-list operations
(``ShardRouter.split``), key groups computed once and reused as the stored keys' prefixes."""
from __future__ import annotations

import random

import pytest

from stateserver.client import BYTES, InvalidArgumentError, KeyGroupOutOfRangeError, StateClient
from stateserver.client._failure import WriterFailure
from stateserver.client._writer_core import ShardRouter
from stateserver.protocol.keygroups import KeyGroupRange, key_group_for

MAX_KEY_GROUPS = 128
EIGHT_SHARDS = [f"{start}-{start + 15}" for start in range(0, MAX_KEY_GROUPS, 16)]


class _Session:
    def __init__(self, key_groups: KeyGroupRange) -> None:
        self.key_groups = key_groups


def test_split_gives_each_shard_its_keys_in_call_order_with_their_key_groups() -> None:
    sessions = [_Session(KeyGroupRange(start, start + 31)) for start in range(0, MAX_KEY_GROUPS, 32)]
    router = ShardRouter(max_key_groups=MAX_KEY_GROUPS, sessions=sessions, failure=WriterFailure())
    chosen = random.Random(1)
    keys = [chosen.randbytes(8) for _ in range(500)] + [b"again"] * 3
    parts = router.split(keys)
    seen: list[int] = []
    for session, positions, key_groups in parts:
        assert positions is not None and positions == sorted(positions)
        assert key_groups == [key_group_for(keys[i], MAX_KEY_GROUPS) for i in positions]
        assert all(key_group in session.key_groups for key_group in key_groups)
        seen += positions
    assert sorted(seen) == list(range(len(keys)))
    ((_only, positions, key_groups),) = router.split([b"again"] * 4)  # one shard: no positions
    assert positions is None and key_groups == [key_group_for(b"again", MAX_KEY_GROUPS)] * 4
    assert router.split([]) == []


def test_split_refuses_a_key_of_a_shard_the_writer_does_not_own() -> None:
    router = ShardRouter(max_key_groups=MAX_KEY_GROUPS, sessions=[_Session(KeyGroupRange(0, 63))],
                         failure=WriterFailure())
    owned = next(k for k in (str(i).encode() for i in range(1000)) if key_group_for(k, MAX_KEY_GROUPS) < 64)
    foreign = next(k for k in (str(i).encode() for i in range(1000)) if key_group_for(k, MAX_KEY_GROUPS) >= 64)
    for keys in ([foreign], [owned, foreign], [foreign, owned, owned]):
        with pytest.raises(KeyGroupOutOfRangeError):
            router.split(keys)


@pytest.mark.parametrize("write_form", ["plain", "stored"])
def test_batched_calls_over_eight_shards_read_their_own_writes_before_and_after_the_flush(
        client: StateClient, namespace: str, write_form: str) -> None:
    """Write batches go in the plain form by default; the stored form (ShardCore.stored_form_writes)
    is still whole and exact end to end."""
    writer = client.open_writer(namespace, key_groups=EIGHT_SHARDS, epoch=1)
    for session in writer.sessions:
        session.core.stored_form_writes = write_form == "stored"
    state = writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
    chosen = random.Random(5)
    keys = [chosen.randbytes(16) for _ in range(3000)]
    state.put_many({key: b"first" for key in keys})
    state.put_many([(keys[0], b"a"), (keys[1], b"b"), (keys[0], b"last")])  # in call order: the last wins
    expected = {key: b"first" for key in keys} | {keys[0]: b"last", keys[1]: b"b"}
    asked = keys[::-1] + [b"never written"]
    assert state.get_many(asked) == [expected.get(key) for key in asked]  # partly still unsent
    writer.flush()
    chosen.shuffle(asked)
    assert state.get_many(asked) == [expected.get(key) for key in asked]
    writer.close()


@pytest.mark.parametrize("bad_key", [5, "text"])
def test_bytes_keys_that_are_not_bytes_are_refused_and_change_nothing(writer, bad_key: object) -> None:  # type: ignore[no-untyped-def]
    """Fails on the code before: put_many and get_many passed each key to ``bytes()``, so the int
    5 became five zero bytes (written and read silently), and a str raised a bare TypeError."""
    state = writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
    with pytest.raises(InvalidArgumentError, match="BYTES"):
        state.put_many({b"good": b"1", bad_key: b"2"})
    with pytest.raises(InvalidArgumentError, match="BYTES"):
        state.get_many([b"good", bad_key])
    writer.flush()
    assert state.get_many([b"good", b"\x00" * 5]) == [None, None]

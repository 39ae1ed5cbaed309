"""Key-group arithmetic: the stable hash, and ranges as Flink's KeyGroupRangeAssignment computes them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stateserver import client
from stateserver.protocol.keygroups import (
    KeyGroupRange, key_group_for, key_groups_for, key_group_of_stored_key, key_group_prefix, operator_for_key_group,
    range_for_operator, ranges_for_parallelism, stable_hash,
)

# Computed once and written down. A key's key group decides which shard (and, after a restore,
# which snapshot file) holds it, so the hash must give these values in every process, every run,
# on every machine and in every future version: if this test fails, existing checkpoints no longer
# find their keys. (xxh3_64 of b"" is the reference value from the xxHash specification.)
KNOWN_HASHES = {
    b"": 3244421341483603138,
    b"apple": 5871078790819449344,
    b"user-42": 5836184775705692621,
    bytes(range(256)): 10666956326096416113,
}
KNOWN_KEY_GROUPS_OF_128 = {b"": 66, b"apple": 0, b"user-42": 77, bytes(range(256)): 113}


def test_stable_hash_gives_the_values_written_down() -> None:
    for key, expected in KNOWN_HASHES.items():
        assert stable_hash(key) == expected
        assert key_group_for(key, 128) == KNOWN_KEY_GROUPS_OF_128[key]
        assert key_group_for(key, 32768) == expected % 32768


def test_stable_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    # Python's hash() of bytes changes with PYTHONHASHSEED; the stable hash must not.
    script = "from stateserver.protocol.keygroups import stable_hash; print(stable_hash(b'apple'), hash(b'apple'))"
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        outputs.append(run.stdout.split())
    assert outputs[0][0] == outputs[1][0] == str(KNOWN_HASHES[b"apple"])
    assert outputs[0][1] != outputs[1][1]  # the salted hash() did change: the seeds took effect


def test_client_exports_the_same_functions() -> None:
    assert client.key_group_for is key_group_for
    assert client.range_for_operator is range_for_operator
    assert client.ranges_for_parallelism is ranges_for_parallelism
    assert client.KeyGroupRange is KeyGroupRange


@pytest.mark.parametrize(("max_key_groups", "parallelism", "expected"), [
    # By hand from Flink's computeKeyGroupRangeForOperatorIndex:
    #   start = (i * max + p - 1) / p,  end = ((i + 1) * max - 1) / p
    (128, 1, [(0, 127)]),
    (128, 2, [(0, 63), (64, 127)]),
    (128, 3, [(0, 42), (43, 85), (86, 127)]),
    (10, 3, [(0, 3), (4, 6), (7, 9)]),
    (10, 4, [(0, 2), (3, 4), (5, 7), (8, 9)]),
    (7, 7, [(i, i) for i in range(7)]),
    (32768, 3, [(0, 10922), (10923, 21845), (21846, 32767)]),
])
def test_ranges_match_flinks_formula(max_key_groups: int, parallelism: int, expected: list[tuple[int, int]]) -> None:
    ranges = client.ranges_for_parallelism(max_key_groups, parallelism)
    assert [(r.start, r.end) for r in ranges] == expected
    assert [client.range_for_operator(max_key_groups, parallelism, i) for i in range(parallelism)] == ranges


@pytest.mark.parametrize("max_key_groups", [1, 2, 7, 10, 128, 1000, 65536])
def test_ranges_partition_the_key_groups_and_agree_with_the_operator_of_a_key_group(max_key_groups: int) -> None:
    for parallelism in sorted({1, 2, 3, 5, 7, 64, 100, max_key_groups} & set(range(1, max_key_groups + 1))):
        ranges = ranges_for_parallelism(max_key_groups, parallelism)
        assert ranges[0].start == 0 and ranges[-1].end == max_key_groups - 1
        for before, after in zip(ranges, ranges[1:]):
            assert after.start == before.end + 1  # contiguous, no gaps, no overlaps
        sizes = [len(r) for r in ranges]
        assert max(sizes) - min(sizes) <= 1  # balanced
        # Flink's computeOperatorIndexForKeyGroup: key_group * parallelism / max_key_groups.
        step = max(1, max_key_groups // 500)
        for key_group in range(0, max_key_groups, step):
            index = operator_for_key_group(max_key_groups, parallelism, key_group)
            assert key_group in ranges[index]


@pytest.mark.parametrize(("max_key_groups", "parallelism", "index"), [
    (128, 0, 0), (128, 129, 0), (128, 2, 2), (128, 2, -1),
])
def test_bad_parallelism_or_index_is_refused(max_key_groups: int, parallelism: int, index: int) -> None:
    with pytest.raises(ValueError):
        range_for_operator(max_key_groups, parallelism, index)


def test_key_group_range() -> None:
    r = KeyGroupRange(10, 19)
    assert len(r) == 10 and 10 in r and 19 in r and 20 not in r and 9 not in r and "10" not in r
    assert str(r) == "10-19" and KeyGroupRange.parse("10-19") == r and KeyGroupRange.parse(" 10 - 19 ") == r
    assert r.intersection(KeyGroupRange(15, 30)) == KeyGroupRange(15, 19)
    assert r.intersection(KeyGroupRange(20, 30)) is None
    assert r.overlaps(KeyGroupRange(19, 19)) and not r.overlaps(KeyGroupRange(0, 9))
    for bad in ("10", "a-b", "10-", "-5", "5--6"):
        with pytest.raises(ValueError):
            KeyGroupRange.parse(bad)
    for start, end in ((5, 4), (-1, 3), (0, 65536)):
        with pytest.raises(ValueError):
            KeyGroupRange(start, end)


def test_stored_keys_start_with_the_key_group_in_two_big_endian_bytes() -> None:
    assert key_group_prefix(0) == b"\x00\x00"
    assert key_group_prefix(258) == b"\x01\x02"
    assert key_group_prefix(65535) == b"\xff\xff"
    assert key_group_of_stored_key(key_group_prefix(4242) + b"user-key") == 4242
    # Byte order of prefixes is numeric order, so a key-group range is a key range.
    prefixes = [key_group_prefix(g) for g in range(0, 65536, 97)]
    assert prefixes == sorted(prefixes)


def test_key_groups_for_a_list_agree_with_key_group_for_each_key() -> None:
    keys = [b"", b"a", *(f"key-{i}".encode() for i in range(1000)), bytes(range(256))]
    for max_key_groups in (1, 7, 128, 32768):
        assert key_groups_for(keys, max_key_groups) == [key_group_for(k, max_key_groups) for k in keys]
    assert key_groups_for([], 128) == []

"""Key-group arithmetic: pure functions, the same in every process and every run.

A key's key group is ``stable_hash(key) mod max_key_groups`` (never Python's ``hash()``,
which is salted per process). Ranges are inclusive on both ends, as in Flink's
``KeyGroupRange``, and an operator's range is computed as Flink's
``KeyGroupRangeAssignment.computeKeyGroupRangeForOperatorIndex`` does.
"""
from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Sequence

import xxhash

MAX_KEY_GROUPS_LIMIT = 1 << 16  # a key group is stored in two big-endian bytes
KEY_GROUP_PREFIX_BYTES = 2

# A 64-bit hash of the serialized key, identical across processes, runs and machines.
stable_hash = xxhash.xxh3_64_intdigest
_hash = stable_hash


def key_group_for(key: bytes, max_key_groups: int) -> int:
    return _hash(key) % max_key_groups


def key_groups_for(keys: Sequence[bytes], max_key_groups: int) -> list[int]:
    """``key_group_for`` of every key, as whole-list operations (no Python bytecode per key): every
    batch on both sides of the wire runs this for every key."""
    return list(map(operator.mod, map(_hash, keys), itertools.repeat(max_key_groups)))


@dataclasses.dataclass(frozen=True, order=True, slots=True)
class KeyGroupRange:
    """Key groups ``start`` to ``end``, both included."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end < MAX_KEY_GROUPS_LIMIT:
            raise ValueError(f"invalid key-group range {self.start}-{self.end}")

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, int) and self.start <= key_group <= self.end

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"

    def intersection(self, other: KeyGroupRange) -> KeyGroupRange | None:
        start, end = max(self.start, other.start), min(self.end, other.end)
        return KeyGroupRange(start, end) if start <= end else None

    def overlaps(self, other: KeyGroupRange) -> bool:
        return self.intersection(other) is not None

    @classmethod
    def parse(cls, text: str) -> KeyGroupRange:
        """Parse ``"A-B"`` (as the CLI takes it)."""
        start, sep, end = text.partition("-")
        if not sep or not start.strip().isdigit() or not end.strip().isdigit():
            raise ValueError(f"expected a key-group range like 0-127, got {text!r}")
        return cls(int(start), int(end))


def range_for_operator(max_key_groups: int, parallelism: int, operator_index: int) -> KeyGroupRange:
    """The key groups that subtask ``operator_index`` of ``parallelism`` owns."""
    if not 0 < parallelism <= max_key_groups:
        raise ValueError(f"parallelism must be 1..{max_key_groups}, got {parallelism}")
    if not 0 <= operator_index < parallelism:
        raise ValueError(f"operator index {operator_index} outside 0..{parallelism - 1}")
    start = (operator_index * max_key_groups + parallelism - 1) // parallelism
    end = ((operator_index + 1) * max_key_groups - 1) // parallelism
    return KeyGroupRange(start, end)


def ranges_for_parallelism(max_key_groups: int, parallelism: int) -> list[KeyGroupRange]:
    return [range_for_operator(max_key_groups, parallelism, i) for i in range(parallelism)]


def operator_for_key_group(max_key_groups: int, parallelism: int, key_group: int) -> int:
    return key_group * parallelism // max_key_groups


def key_group_prefix(key_group: int) -> bytes:
    return key_group.to_bytes(KEY_GROUP_PREFIX_BYTES, "big")


def key_group_of_stored_key(stored_key: bytes) -> int:
    return int.from_bytes(stored_key[:KEY_GROUP_PREFIX_BYTES], "big")


# Every possible two-byte prefix, built once: the hot path indexes instead of encoding.
KEY_GROUP_PREFIXES = [key_group_prefix(g) for g in range(MAX_KEY_GROUPS_LIMIT)]

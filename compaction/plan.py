"""What an offline compaction reads and writes: output shards, their sources, the new id. No I/O.

The output key-group ranges must tile the namespace (``0..max_key_groups-1``, each key group once);
each output shard takes exactly its key groups from every input shard that overlaps it, which is
what a restore of that range would take (``plan_restore``). The new checkpoint's id must be above
every committed one: the catalog refuses a subsumed id at commit time anyway, but a compaction
that would fail only after rewriting everything should fail before it starts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from stateserver.protocol.errors import InvalidInput
from stateserver.protocol.keygroups import KeyGroupRange, ranges_for_parallelism
from stateserver.restore import plan_restore
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputShard:
    """One shard of the new checkpoint; ``sources`` are the input shards overlapping it, in key order."""

    key_groups: KeyGroupRange
    sources: tuple[cpb.ShardSnapshotHandle, ...]

    @property
    def source_bytes(self) -> int:
        return sum(h.state_bytes for h in self.sources)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompactionPlan:
    namespace: str
    source: cpb.CheckpointMetadata
    target_checkpoint_id: int
    outputs: tuple[OutputShard, ...]

    @property
    def max_key_groups(self) -> int:
        return self.source.max_key_groups

    @property
    def writer_epoch(self) -> int:
        """The newest writer epoch of the input: a restore of the output fences every older writer."""
        return max(h.writer_epoch for h in self.source.shards)

    @property
    def input_bytes(self) -> int:
        return sum(h.state_bytes for h in self.source.shards)


def even_ranges(max_key_groups: int, shards: int) -> list[KeyGroupRange]:
    """``shards`` ranges splitting the key groups as the client splits them for a parallelism."""
    if not 0 < shards <= max_key_groups:
        raise InvalidInput(f"cannot split {max_key_groups} key groups into {shards} shards; "
                           f"use 1 to {max_key_groups} shards")
    return ranges_for_parallelism(max_key_groups, shards)


def parse_ranges(text: str) -> list[KeyGroupRange]:
    """``"0-41,42-85,86-127"``; raises ValueError naming the part that is not a range."""
    return [KeyGroupRange.parse(part.strip()) for part in text.split(",")]


def check_tiling(ranges: Sequence[KeyGroupRange], max_key_groups: int) -> None:
    """Every key group ``0..max_key_groups-1`` in exactly one range, else InvalidInput saying where."""
    expected = 0
    for key_groups in sorted(ranges):
        if key_groups.start < expected:
            raise InvalidInput(f"key-group ranges overlap at key group {key_groups.start} ({key_groups})")
        if key_groups.start > expected:
            raise InvalidInput(f"key groups {expected}-{key_groups.start - 1} are in no range; the ranges "
                               f"must cover 0-{max_key_groups - 1} exactly once")
        expected = key_groups.end + 1
    if expected != max_key_groups:
        beyond = (f"key groups {expected}-{max_key_groups - 1} are in no range" if expected < max_key_groups
                  else f"key groups {max_key_groups}-{expected - 1} are outside the namespace")
        raise InvalidInput(f"{beyond}; the ranges must cover 0-{max_key_groups - 1} exactly once")


def target_checkpoint_id(committed: Sequence[int], requested: int | None) -> int:
    """The id of the new checkpoint: ``requested``, or the latest committed id plus one."""
    latest = max(committed, default=0)
    if requested is None:
        return latest + 1
    if requested <= latest:
        raise InvalidInput(f"the new checkpoint must have an id above the latest committed checkpoint {latest}; "
                           f"{requested} is not")
    return requested


def plan_compaction(source: cpb.CheckpointMetadata, ranges: Sequence[KeyGroupRange] | None, *,
                    target_checkpoint_id: int) -> CompactionPlan:
    """``ranges`` None keeps the input's shards as they are (compaction and TTL cleanup only)."""
    if ranges is None:
        ranges = [KeyGroupRange(h.key_group_start, h.key_group_end) for h in source.shards]
    check_tiling(ranges, source.max_key_groups)
    outputs = tuple(OutputShard(key_groups=r, sources=plan_restore(source, r).sources) for r in sorted(ranges))
    return CompactionPlan(namespace=source.namespace, source=source, target_checkpoint_id=target_checkpoint_id,
                          outputs=outputs)

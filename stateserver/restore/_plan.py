"""What a restore of a key-group range takes from a checkpoint: pure, no I/O."""
from __future__ import annotations

import dataclasses

from stateserver.protocol.errors import CorruptData, InvalidInput
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestorePlan:
    """``sources`` are the checkpoint's shard snapshots overlapping ``key_groups``, in key order."""

    namespace: str
    checkpoint_id: int
    max_key_groups: int
    key_groups: KeyGroupRange
    sources: tuple[cpb.ShardSnapshotHandle, ...]

    @property
    def rescaled(self) -> bool:
        """False when one snapshot shard has exactly these key groups: its files are the shard."""
        return not (len(self.sources) == 1 and snapshot_key_groups(self.sources[0]) == self.key_groups)

    @property
    def download_bytes(self) -> int:
        return sum(f.size for h in self.sources for f in (*h.shared_files, *h.private_files))

    @property
    def download_files(self) -> int:
        return sum(len(h.shared_files) + len(h.private_files) for h in self.sources)


def snapshot_key_groups(handle: cpb.ShardSnapshotHandle) -> KeyGroupRange:
    try:
        return KeyGroupRange(handle.key_group_start, handle.key_group_end)
    except ValueError as exc:
        raise CorruptData(f"shard manifest {handle.manifest_key}: {exc}") from None


def plan_restore(metadata: cpb.CheckpointMetadata, key_groups: KeyGroupRange) -> RestorePlan:
    if key_groups.end >= metadata.max_key_groups:
        raise InvalidInput(f"key groups {key_groups} are outside namespace {metadata.namespace!r}, "
                           f"which has key groups 0-{metadata.max_key_groups - 1}")
    sources = tuple(sorted((h for h in metadata.shards if snapshot_key_groups(h).overlaps(key_groups)),
                           key=lambda h: h.key_group_start))
    _check_coverage(metadata, key_groups, sources)
    return RestorePlan(namespace=metadata.namespace, checkpoint_id=metadata.checkpoint_id,
                       max_key_groups=metadata.max_key_groups, key_groups=key_groups, sources=sources)


def _check_coverage(metadata: cpb.CheckpointMetadata, key_groups: KeyGroupRange,
                    sources: tuple[cpb.ShardSnapshotHandle, ...]) -> None:
    """The commit checked that the shards tile the namespace; a gap or an overlap here means the
    metadata is damaged, and a restore from it would lose or double keys."""
    covered_to = key_groups.start
    for handle in sources:
        if max(handle.key_group_start, key_groups.start) != covered_to:
            break
        covered_to = handle.key_group_end + 1
    else:
        if covered_to > key_groups.end:
            return
    raise CorruptData(f"checkpoint {metadata.checkpoint_id} of namespace {metadata.namespace!r}: the shard "
                      f"snapshots do not cover key group {covered_to} exactly once")

"""The commit of a compacted checkpoint, and what a lost race with a live job means.

Compaction is meant for a stopped job, or for a copy nobody else commits to (a savepoint-like
namespace). If a running job commits a checkpoint with the same id, or a higher one, while the
compaction runs, the create-only commit lets exactly one of them win: the job's checkpoint stays
as it is, and the compaction fails with ``CompactionConflict``. Its uploads are then named by no
checkpoint and carry an id at or below the latest committed one, which ``stateserver gc``
reclaims on its next run.
"""
from __future__ import annotations

from collections.abc import Sequence

from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.errors import AlreadyExists
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


class CompactionConflict(AlreadyExists):
    """Another writer committed the compaction's checkpoint id (or a later one) first."""


def commit_compacted(catalog: CheckpointCatalog, namespace: str, checkpoint_id: int,
                     handles: Sequence[cpb.ShardSnapshotHandle], *, operator_metadata: bytes = b"") -> str:
    """Commit create-only; returns the metadata key, or raises CompactionConflict. ``operator_metadata``
    is the source checkpoint's: the same state needs the same source offsets to resume from."""
    committed = catalog.committed_ids(namespace)
    if committed and committed[-1] >= checkpoint_id:
        raise _conflict(namespace, checkpoint_id, committed[-1], len(handles))
    try:
        return catalog.commit(namespace, checkpoint_id, handles, operator_metadata=operator_metadata)
    except AlreadyExists:
        raise _conflict(namespace, checkpoint_id, checkpoint_id, len(handles)) from None


def _conflict(namespace: str, checkpoint_id: int, latest: int, shards: int) -> CompactionConflict:
    return CompactionConflict(
        f"checkpoint {latest} of namespace {namespace!r} was committed while compacting into checkpoint "
        f"{checkpoint_id}, so the compaction did not commit (is the job still running? compact the "
        f"checkpoint of a stopped job); the {shards} shard snapshots it uploaded are garbage that "
        "`stateserver gc` reclaims")

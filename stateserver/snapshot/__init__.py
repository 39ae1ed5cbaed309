"""Shard snapshots: the sync phase (a local RocksDB checkpoint) and the async phase
(an incremental upload to object storage), as Flink's incremental snapshot strategy."""
from stateserver.snapshot.incremental_upload import UploadResult, upload_incremental
from stateserver.snapshot.local_checkpoint import LocalCheckpoint, take_local_checkpoint
from stateserver.snapshot.shard_snapshots import ShardSnapshots, SnapshotStatus

__all__ = [
    "LocalCheckpoint",
    "ShardSnapshots",
    "SnapshotStatus",
    "UploadResult",
    "take_local_checkpoint",
    "upload_incremental",
]

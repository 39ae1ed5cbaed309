"""Rewriting stored state offline: a committed checkpoint into a new committed checkpoint.

    TTL cleanup          entries whose expiry is at or before a given time are dropped (``expiry``)
    offline compaction   each output shard is written as sorted SST files in one level, with no
                         tombstones, so a job restoring it starts with no compaction debt
                         (``rewrite``, with ``stateserver.shard.sst_files``)
    re-sharding          the output may have other key-group ranges than the input: each output
                         shard takes exactly its key groups from every input shard overlapping it

``plan_compaction`` says what will be read and written, without I/O (a dry run prints it);
``compact_checkpoint`` carries it out and commits the new checkpoint create-only once every shard
snapshot is in the store (``commit``). Existing objects are never modified. Meant for a stopped
job: if a running job commits the same id first, the compaction raises ``CompactionConflict`` and
leaves only uploads that ``stateserver gc`` reclaims.

    catalog = CheckpointCatalog(store)
    source = catalog.resolve("job", "latest")
    plan = plan_compaction(source, even_ranges(source.max_key_groups, 3),
                           target_checkpoint_id=target_checkpoint_id(catalog.committed_ids("job"), None))
    result = compact_checkpoint(store, plan, expire_before_ms=now_ms, work_dir=tmp,
                                resources=resources, executor=pool)
"""
from stateserver.compaction.commit import CompactionConflict
from stateserver.compaction.compact import CompactionResult, ShardCompaction, compact_checkpoint
from stateserver.compaction.plan import (
    CompactionPlan,
    OutputShard,
    check_tiling,
    even_ranges,
    parse_ranges,
    plan_compaction,
    target_checkpoint_id,
)

__all__ = [
    "CompactionConflict",
    "CompactionPlan",
    "CompactionResult",
    "OutputShard",
    "ShardCompaction",
    "check_tiling",
    "compact_checkpoint",
    "even_ranges",
    "parse_ranges",
    "plan_compaction",
    "target_checkpoint_id",
]

"""One output shard, rewritten: its key groups from every overlapping input shard, filtered, as SSTs.

The shard is a fresh database made by ``Shard`` (so its epoch record and state descriptors are
the node's own format), holding the input's newest writer epoch and every state the overlapping
input shards declare. Each column family's entries stream from the input shards in key order
(input shards hold disjoint key-group ranges, so concatenating them in range order keeps keys
sorted) through the TTL filter into SST files that are ingested into the bottommost level. The
``_meta`` family is flushed and moved to the same level: the shard starts with no compaction debt.
"""
from __future__ import annotations

import dataclasses
import itertools
import pathlib
from collections.abc import Iterator

from stateserver.compaction.expiry import is_expired
from stateserver.compaction.plan import OutputShard
from stateserver.compaction.sources import Entries, SourceShards
from stateserver.shard.sst_files import DEFAULT_TARGET_FILE_BYTES, ingest, write_sst_files
from stateserver.protocol.limits import Limits
# One rule for restore and compaction: which states and column families a shard made of several
# sources gets.
from stateserver.restore import RestorePlan, destination_family, union_of_states
from stateserver.shard.rocks import RocksResources
from stateserver.shard.shard import META_COLUMN_FAMILY, Shard, ShardId
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

_STATE_FAMILY_PREFIX = "state."


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewriteCounts:
    entries_in: int
    entries_out: int
    expired: int


@dataclasses.dataclass
class _Counter:
    entries_in: int = 0
    expired: int = 0


def rewrite_shard(source: cpb.CheckpointMetadata, output: OutputShard, sources: SourceShards, directory: pathlib.Path,
                  *, epoch: int, expire_before_ms: int | None, resources: RocksResources, scratch_dir: pathlib.Path,
                  target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES) -> tuple[Shard, RewriteCounts]:
    """Build the output shard in ``directory`` (must not exist); returns it open, and what it holds.

    ``expire_before_ms`` None keeps every entry (compaction and re-sharding only).
    """
    plan = RestorePlan(namespace=source.namespace, checkpoint_id=source.checkpoint_id,
                       max_key_groups=source.max_key_groups, key_groups=output.key_groups, sources=output.sources)
    shard = Shard(shard_id=ShardId(source.namespace, output.key_groups), max_key_groups=source.max_key_groups,
                  path=directory, resources=resources, limits=Limits())
    try:
        shard.take_ownership(epoch)
        shard.declare_states(union_of_states(plan))
        opened = [sources.get(handle) for handle in output.sources]
        counter = _Counter()
        for family in dict.fromkeys(f for s in opened for f in s.families):
            parts = (s.entries(family, output.key_groups) for s in opened)
            entries = _counted(itertools.chain.from_iterable(parts), counter,
                               expire_before_ms if family.startswith(_STATE_FAMILY_PREFIX) else None)
            files = write_sst_files(entries, scratch_dir, resources.options(), target_file_bytes=target_file_bytes)
            ingest(destination_family(shard, family, resources, f"an input shard of output shard {output.key_groups}"),
                   files)
        _compact_meta(shard)
    except BaseException:
        shard.close()
        raise
    return shard, RewriteCounts(entries_in=counter.entries_in, entries_out=counter.entries_in - counter.expired,
                                expired=counter.expired)


def _counted(entries: Entries, counter: _Counter, expire_before_ms: int | None) -> Iterator[tuple[bytes, bytes]]:
    for key, value in entries:
        counter.entries_in += 1
        if expire_before_ms is not None and is_expired(value, expire_before_ms):
            counter.expired += 1
            continue
        yield key, value


def _compact_meta(shard: Shard) -> None:
    """Flush the epoch record and descriptors and move them to the bottommost level too."""
    meta = shard.db.get_column_family(META_COLUMN_FAMILY)
    try:
        meta.flush()
        meta.compact_range(None, None)
    finally:
        del meta

"""RocksDB resources shared by every shard of a node, and the options each shard opens with.

One block cache and one write-buffer manager serve all shards, so a node with hundreds of
shards stays within ``block_cache_bytes + write_buffer_bytes`` for those two budgets. The
memtables are charged to the block cache as well, as RocksDB's wiki recommends.
"""
from __future__ import annotations

import dataclasses
import pathlib

import rocksdict

DEFAULT_COLUMN_FAMILY = "default"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RocksTuning:
    block_cache_bytes: int = 256 << 20
    write_buffer_bytes: int = 128 << 20
    # Per column family; the write-buffer manager caps the node-wide total anyway.
    memtable_bytes: int = 16 << 20
    max_open_files_per_shard: int = 256
    compression: str = "lz4"
    # Universal compaction: with keys spread evenly (hashed key groups), leveled compaction
    # rewrites the whole of a small shard every few checkpoints, and an incremental snapshot
    # uploads every rewritten file. Measured at 1% churn per checkpoint on a 67 MB shard over
    # 60 checkpoints: leveled uploads about 15% of the state per checkpoint, universal about 5%
    # (benchmarks/results/compaction_style.md). The size-amplification bound keeps the
    # state on disk (and what a restore downloads) within 1.5x of the live data.
    compaction_style: str = "universal"
    max_size_amplification_percent: int = 50
    # Off by default, as in Flink's RocksDB backend: the durable copy of state is the
    # checkpoint in object storage, and a graceful close flushes memtables. On, writes
    # acknowledged since the last checkpoint also survive a crash of the node process.
    write_ahead_log: bool = False
    # RocksDB's tickers, read at metrics scrapes (block cache hits): a few clock reads per
    # RocksDB call, lost in a request's Python overhead (measured: no difference in bulk puts/gets).
    statistics: bool = True


_COMPRESSION = {
    "none": rocksdict.DBCompressionType.none,
    "snappy": rocksdict.DBCompressionType.snappy,
    "lz4": rocksdict.DBCompressionType.lz4,
    "zstd": rocksdict.DBCompressionType.zstd,
}


_COMPACTION_STYLES = ("level", "universal")


class RocksResources:
    """Owns the node-wide cache and write-buffer manager; makes options for shards."""

    def __init__(self, tuning: RocksTuning) -> None:
        if tuning.compression not in _COMPRESSION:
            raise ValueError(f"unknown compression {tuning.compression!r}; use one of {sorted(_COMPRESSION)}")
        if tuning.compaction_style not in _COMPACTION_STYLES:
            raise ValueError(f"unknown compaction style {tuning.compaction_style!r}; use one of {_COMPACTION_STYLES}")
        self.tuning = tuning
        self.block_cache = rocksdict.Cache(tuning.block_cache_bytes)
        self.write_buffer_manager = rocksdict.WriteBufferManager(tuning.write_buffer_bytes, False)

    def options(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self.block_cache)
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self.write_buffer_manager)
        options.set_write_buffer_size(self.tuning.memtable_bytes)
        # A whole-key bloom filter per memtable (2% of its size, ~20 bits a key): a get of a key
        # that is not in the memtables skips their skiplists (measured: random gets -35% CPU).
        options.set_memtable_prefix_bloom_ratio(0.02)
        options.set_memtable_whole_key_filtering(True)
        options.set_max_open_files(self.tuning.max_open_files_per_shard)
        options.set_max_background_jobs(2)
        options.set_compression_type(_COMPRESSION[self.tuning.compression]())
        if self.tuning.compaction_style == "universal":
            options.set_compaction_style(rocksdict.DBCompactionStyle.universal())
            universal = rocksdict.UniversalCompactOptions()
            universal.max_size_amplification_percent = self.tuning.max_size_amplification_percent
            options.set_universal_compaction_options(universal)
        if self.tuning.statistics:
            options.enable_statistics()
        return options

    def write_options(self) -> rocksdict.WriteOptions:
        options = rocksdict.WriteOptions()
        options.disable_wal = not self.tuning.write_ahead_log
        return options

    def open_db(self, path: pathlib.Path, *, read_only: bool = False) -> rocksdict.Rdict:
        """Open (or create) a shard's database with every column family it has on disk."""
        if not read_only:
            path.mkdir(parents=True, exist_ok=True)
        existing = rocksdict.Rdict.list_cf(str(path)) if (path / "CURRENT").exists() else []
        families = {name: self.options() for name in existing if name != DEFAULT_COLUMN_FAMILY}
        access = rocksdict.AccessType.read_only() if read_only else rocksdict.AccessType.read_write()
        db = rocksdict.Rdict(str(path), self.options(), column_families=families, access_type=access)
        db.set_write_options(self.write_options())
        return db

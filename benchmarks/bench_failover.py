#!/usr/bin/env python
"""Failover time of a 3-node cluster: SIGKILL one node, recover, first acknowledged write.

    .venv/bin/python benchmarks/bench_failover.py              # writes benchmarks/results/failover.md
    .venv/bin/python benchmarks/bench_failover.py --quick      # smaller states, 2 repeats, a smoke run
    .venv/bin/python benchmarks/bench_failover.py --s3         # also against SeaweedFS S3 on loopback

For each configuration (shards x bytes per shard), three real node processes on loopback share a
fresh snapshot store (file://, and SeaweedFS S3 with ``--s3``). A job of one subtask per shard
(``KeyedStateBackend`` + ``CheckpointCoordinator``, as examples/recovering_job.py) starts with
``recover``, writes ``bytes per shard`` of incompressible values (4 KiB each) into every shard and
commits a checkpoint. Then, per repeat:

1. one node gets SIGKILL (the clock starts once the process is gone);
2. detection: the job writes to a shard of the dead node (put + flush) until that fails;
3. ``CoordinatorCheckpoint.recover(subtasks)``, split into epoch allocation (``next_epoch``),
   reading the latest checkpoint, and reopening + restoring every shard on the nodes that own it now;
4. the first acknowledged write: a put into a shard that moved, then flush.

Failover = 1 + 2 + 3 + 4: node loss to the first acknowledged write. The baseline, measured in the
same repeat right after, is a plain parallel download of the committed files of the lost node's
shards through the product's object-store API (``ObjectStore.get_to_file``, ``BASELINE_THREADS``
at once: as many transfer threads as the two taking-over nodes have together), nothing else.
Between repeats the killed node restarts on an empty data directory, the job recovers again and
commits a checkpoint, as a running job does between two failures (untimed): the killed node holds
its shards once more, and retention collects the ownership records the recoveries superseded.
Figures are medians over the repeats. Each repeat also reads the surviving nodes' logs for where
their opens spent the time, phase by phase (``phases_ms`` of "shard opened", stateserver.node.open_phases).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

# Before anything imports grpc, as tests/conftest.py: a node launched with preexec_fn from a process
# with gRPC fork support may abort before exec (grpc/grpc#43055), a node that "did not start".
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "tests"):  # tests/ for the node, cluster and SeaweedFS launchers
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from stateserver.client import (  # noqa: E402
    BYTES, CheckpointCoordinator, KeyedStateBackend, StateClient, StateServerError, key_group_for,
    ranges_for_parallelism,
)
from stateserver.protocol import placement  # noqa: E402
from stateserver.store import ObjectStore, RetryingObjectStore, open_store  # noqa: E402
from support.cluster import Cluster, run_cluster  # noqa: E402
from support.node import NodeStartError  # noqa: E402

from bench_common import cpu_model, log, version  # noqa: E402  (benchmarks/ is the script's directory)

NAMESPACE = "bench-failover"
STATE = "v"
VALUE_BYTES = 4096
KIB, MIB = 1 << 10, 1 << 20
BASELINE_THREADS = 16  # two taking-over nodes x their 8 transfer threads
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "failover.md"
DEFAULT_CONFIGS = ("16x1M", "64x64K", "64x1M", "64x8M", "256x64K")
QUICK_CONFIGS = ("16x64K", "64x1M")


@dataclasses.dataclass(frozen=True)
class Config:
    shards: int
    shard_bytes: int

    @staticmethod
    def parse(text: str) -> Config:
        shards, size = text.lower().split("x")
        unit = {"k": KIB, "m": MIB}[size[-1]]
        return Config(int(shards), int(size[:-1]) * unit)

    @property
    def label(self) -> str:
        return f"{self.shards} x {_size(self.shard_bytes)}"


@dataclasses.dataclass
class Sample:
    detection: float
    epoch: float
    latest: float
    opens: float
    first_write: float
    baseline: float
    moved: int
    moved_bytes: int
    # Seconds the recovery's shard opens spent in each phase, summed over the surviving nodes'
    # opens (stateserver.node.open_phases), and how many opens that is.
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    opened: int = 0

    @property
    def failover(self) -> float:
        return self.detection + self.epoch + self.latest + self.opens + self.first_write


@dataclasses.dataclass
class ConfigResult:
    store: str
    config: Config
    samples: list[Sample] = dataclasses.field(default_factory=list)

    def median(self, field: str) -> float:
        return statistics.median(getattr(s, field) for s in self.samples)


# -- the job --------------------------------------------------------------------------------


class Job:
    """One subtask per shard, each with one value state of ``shard_bytes`` of random values."""

    def __init__(self, client: StateClient, config: Config, seed: int) -> None:
        self.client = client
        self.config = config
        self.max_key_groups = max(128, config.shards)
        client.create_namespace(NAMESPACE, self.max_key_groups)
        self.ranges = ranges_for_parallelism(self.max_key_groups, config.shards)
        self.coordinator = CheckpointCoordinator(client, NAMESPACE)
        self.subtasks = [KeyedStateBackend(client, NAMESPACE, key_groups=r) for r in self.ranges]
        self.keys = self._keys_per_shard(max(2, config.shard_bytes // VALUE_BYTES))
        self.rng = random.Random(seed)
        self.states: list = []

    def _keys_per_shard(self, count: int) -> list[list[bytes]]:
        shard_of = {g: i for i, r in enumerate(self.ranges) for g in range(r.start, r.end + 1)}
        keys: list[list[bytes]] = [[] for _ in self.ranges]
        missing, number = len(self.ranges) * count, 0
        while missing:
            key = b"key-%d" % number
            number += 1
            bucket = keys[shard_of[key_group_for(key, self.max_key_groups)]]
            if len(bucket) < count:
                bucket.append(key)
                missing -= 1
        return keys

    def start(self) -> None:
        self.coordinator.recover(self.subtasks)
        self.states = [s.writer.value_state(STATE, key_serializer=BYTES, value_serializer=BYTES)
                       for s in self.subtasks]

    def load_and_checkpoint(self) -> int:
        for index, state in enumerate(self.states):
            keys = self.keys[index]
            values = self.rng.randbytes(VALUE_BYTES * len(keys))
            state.put_many({k: values[i * VALUE_BYTES:(i + 1) * VALUE_BYTES] for i, k in enumerate(keys)})
            self.subtasks[index].writer.flush()
        return self.coordinator.checkpoint(self.subtasks)

    def write_one(self, index: int) -> None:
        """A put into shard ``index`` (over its first key), acknowledged."""
        self.states[index].put(self.keys[index][0], b"x")
        self.subtasks[index].writer.flush()

    def shard_id(self, index: int) -> str:
        return f"{NAMESPACE}/{self.ranges[index]}"


# -- one failover -----------------------------------------------------------------------------


@contextlib.contextmanager
def timed_calls(client: StateClient, names: Sequence[str]) -> Iterator[dict[str, float]]:
    """Seconds spent in ``client.<name>`` for each name, while the block runs."""
    spent = {name: 0.0 for name in names}
    originals = {name: getattr(client, name) for name in names}

    def wrap(name: str, method: Callable[..., object]) -> Callable[..., object]:
        def timed(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return timed

    for name, method in originals.items():
        setattr(client, name, wrap(name, method))
    try:
        yield spent
    finally:
        for name in names:
            delattr(client, name)  # the class's method again


def fail_over(cluster: Cluster, job: Job, victim: str, store: ObjectStore, checkpoint_id: int,
              scratch: Path) -> Sample:
    lost = [i for i in range(len(job.ranges)) if placement.owner(job.shard_id(i), cluster.addresses) == victim]
    cluster.kill(victim)
    started = time.perf_counter()
    while True:  # the job learns of the loss from a write to one of the lost shards
        try:
            job.write_one(lost[0])
        except StateServerError:
            break
    detected = time.perf_counter()
    with timed_calls(job.client, ["next_epoch", "checkpoint_metadata"]) as spent:
        recovery = job.coordinator.recover(job.subtasks)
    recovered = time.perf_counter()
    job.write_one(lost[-1])
    written = time.perf_counter()
    assert recovery.checkpoint_id == checkpoint_id, recovery
    check_restored(job, lost)
    handles = [h for h in _checkpoint_handles(store, checkpoint_id)
               if placement.owner(f"{NAMESPACE}/{h.key_group_start}-{h.key_group_end}", cluster.addresses) == victim]
    keys = [(f.object_key, f.size) for h in handles for f in (*h.shared_files, *h.private_files)]
    baseline = plain_download(store, [k for k, _ in keys], scratch)
    opens = recovered - detected - spent["next_epoch"] - spent["checkpoint_metadata"]
    phases, opened = open_phases(cluster, victim, recovery.epoch)
    return Sample(detection=detected - started, epoch=spent["next_epoch"], latest=spent["checkpoint_metadata"],
                  opens=opens, first_write=written - recovered, baseline=baseline, moved=len(lost),
                  moved_bytes=sum(size for _, size in keys), phases=phases, opened=opened)


def open_phases(cluster: Cluster, victim: str, epoch: int) -> tuple[dict[str, float], int]:
    """The phases of the surviving nodes' opens at ``epoch``, summed, from their "shard opened" log
    lines (JSON, the nodes' default), and the number of opens."""
    summed: dict[str, float] = {}
    opened = 0
    for address, node in cluster.nodes.items():
        if address == victim:
            continue
        for line in node.log_path.read_text(errors="replace").splitlines():
            if '"shard opened"' not in line:
                continue
            fields = json.loads(line)
            if fields.get("epoch") != epoch:
                continue
            opened += 1
            for phase, ms in fields.get("phases_ms", {}).items():
                summed[phase] = summed.get(phase, 0.0) + ms / 1000
    return summed, opened


def check_restored(job: Job, lost: Sequence[int]) -> None:
    """The moved shards hold every key of the checkpoint (a sample of each, to keep it short)."""
    for index in lost:
        sample = job.keys[index][1:5]  # the first one the probe writes
        found = job.states[index].get_many(sample)
        if any(value is None or len(value) != VALUE_BYTES for value in found):
            raise RuntimeError(f"shard {job.ranges[index]} lost keys in the failover")


def _checkpoint_handles(store: ObjectStore, checkpoint_id: int) -> list:
    from stateserver.snapshot.catalog import CheckpointCatalog

    return list(CheckpointCatalog(store).resolve(NAMESPACE, checkpoint_id).shards)


def plain_download(store: ObjectStore, keys: Sequence[str], scratch: Path) -> float:
    """Seconds to fetch ``keys`` into files, ``BASELINE_THREADS`` at a time, nothing checked."""
    directory = scratch / "baseline"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(BASELINE_THREADS) as pool:
        list(pool.map(lambda k: store.get_to_file(k[1], directory / f"{k[0]}"), enumerate(keys)))
    seconds = time.perf_counter() - started
    shutil.rmtree(directory)
    return seconds


def bring_back(cluster: Cluster, job: Job, victim: str) -> int:
    """The victim again, on an empty data directory (it learns the namespace from the store),
    holding its shards, and a checkpoint committed, as a running job would between two failures
    (untimed). Returns the checkpoint's id."""
    shutil.rmtree(cluster.data_dir(victim), ignore_errors=True)
    cluster.start(victim)
    job.client.refresh(forget_unavailable=True)
    job.coordinator.recover(job.subtasks)
    return job.coordinator.checkpoint(job.subtasks)


# -- one configuration --------------------------------------------------------------------------


def measure(store_label: str, snapshot_url: str, store_options: dict[str, str] | None, config: Config,
            repeats: int, root: Path) -> ConfigResult:
    for attempt in range(3):
        try:
            return measure_once(store_label, f"{snapshot_url}-{attempt}", store_options, config, repeats,
                                root / str(attempt))
        except NodeStartError as exc:  # a port taken meanwhile, say: a fresh cluster on other ports
            log(f"{store_label} {config.label}: a node did not start ({str(exc).splitlines()[0]}); again")
    raise RuntimeError("the cluster did not start three times")


def measure_once(store_label: str, snapshot_url: str, store_options: dict[str, str] | None, config: Config,
                 repeats: int, root: Path) -> ConfigResult:
    result = ConfigResult(store=store_label, config=config)
    with run_cluster(root / "nodes", snapshot_url) as cluster, StateClient(cluster.addresses) as client:
        store = RetryingObjectStore(open_store(snapshot_url, options=store_options))
        job = Job(client, config, seed=config.shards)
        job.start()
        started = time.perf_counter()
        checkpoint_id = job.load_and_checkpoint()
        log(f"{store_label} {config.label}: loaded and checkpointed in {time.perf_counter() - started:.1f} s")
        for number in range(repeats):
            victim = cluster.addresses[number % len(cluster.addresses)]
            sample = fail_over(cluster, job, victim, store, checkpoint_id, root / "scratch")
            result.samples.append(sample)
            log(f"{store_label} {config.label}: failover {sample.failover:.2f} s (detect {sample.detection:.2f}, "
                f"epoch {sample.epoch:.2f}, latest {sample.latest:.2f}, opens {sample.opens:.2f}, "
                f"write {sample.first_write:.3f}); {sample.moved} shards moved, plain download {sample.baseline:.2f} s")
            log(f"  {sample.opened} opens, phases summed over them (s): "
                + ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in sample.phases.items()))
            if number + 1 < repeats:
                checkpoint_id = bring_back(cluster, job, victim)
    return result


# -- the report -----------------------------------------------------------------------------------


def write_report(results: Sequence[ConfigResult], command: str, repeats: int, output: Path) -> None:
    lines = [
        "# Failover time: node loss to the first acknowledged write",
        "",
        f"Written by `benchmarks/bench_failover.py` on {datetime.date.today().isoformat()}. Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        f"Three node processes on loopback, one snapshot store; a job of one subtask per shard, values of "
        f"{VALUE_BYTES} random bytes; one committed checkpoint; then {repeats} repeats of: SIGKILL one node (a "
        "different one each repeat), detect it with a failed write, `CheckpointCoordinator.recover(subtasks)`, "
        "one put + flush into a moved shard; between repeats the killed node restarts on an empty data directory, "
        "the job recovers and commits a checkpoint (untimed). Figures are medians over the repeats. The baseline is a plain "
        f"parallel download ({BASELINE_THREADS} threads, `ObjectStore.get_to_file`) of the committed files of the "
        "lost node's shards, measured in the same repeat; ratio = failover / baseline.",
        "",
        f"Machine: {cpu_model()}, {_cores()} cores shared with other work; Python {platform.python_version()}, "
        f"grpcio {version('grpcio')}, rocksdict {version('rocksdict')}, obstore {version('obstore')}.",
        "",
        "| store | shards x size | shards moved (MiB) | failover s | detect s | epoch s | latest s | opens + restores s "
        "| first write s | plain download s | ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.store} | {r.config.label} | {round(r.median('moved'))} ({r.median('moved_bytes') / MIB:.1f}) "
            f"| **{r.median('failover'):.2f}** | {r.median('detection'):.3f} | {r.median('epoch'):.3f} "
            f"| {r.median('latest'):.3f} | {r.median('opens'):.2f} | {r.median('first_write'):.3f} "
            f"| {r.median('baseline'):.2f} | {statistics.median(s.failover / s.baseline for s in r.samples):.1f}x |")
    lines += ["", "Every repeat (failover s / plain download s):", ""]
    for r in results:
        runs = ", ".join(f"{s.failover:.2f}/{s.baseline:.2f}" for s in r.samples)
        lines.append(f"- {r.store} {r.config.label}: {runs}")
    if any(s.phases for r in results for s in r.samples):
        lines += ["", "Where the opens of the recover spent their time: seconds per phase summed over the surviving "
                  "nodes' opens (their `phases_ms` log fields, `stateserver_shard_open_phase_seconds`; phases in "
                  "`stateserver/node/open_phases.py`), opens running 8 at a time per node, median over the repeats:", ""]
        for r in results:
            names = sorted({name for s in r.samples for name in s.phases})
            summed = ", ".join(f"{name} {statistics.median(s.phases.get(name, 0.0) for s in r.samples):.2f}"
                               for name in names)
            lines.append(f"- {r.store} {r.config.label} ({round(r.median('opened'))} opens): {summed}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")


def _size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def _cores() -> int:
    return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", help=f"SHARDSxSIZE, e.g. 64x1M (default {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--repeats", type=int, help="failovers per configuration (default 3, --quick 2)")
    parser.add_argument("--quick", action="store_true", help=f"configs {' '.join(QUICK_CONFIGS)}, 2 repeats")
    parser.add_argument("--s3", action="store_true", help="also against SeaweedFS S3 on loopback")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    configs = [Config.parse(c) for c in (args.configs or (QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS))]
    repeats = args.repeats or (2 if args.quick else 3)
    command = ".venv/bin/python benchmarks/bench_failover.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results: list[ConfigResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as temporary:
        root = Path(temporary)
        for index, config in enumerate(configs):
            results.append(measure("file://", (root / f"store-{index}").as_uri(), None, config, repeats,
                                   root / f"file-{index}"))
        if args.s3:
            results += measure_s3(configs, repeats, root)
    write_report(results, command.strip(), repeats, args.output)
    log(f"wrote {args.output}")
    return 0


def measure_s3(configs: Sequence[Config], repeats: int, root: Path) -> list[ConfigResult]:
    from support.seaweedfs import run_seaweedfs

    results = []
    with run_seaweedfs(root / "seaweedfs") as seaweed:
        saved = {name: os.environ.get(name) for name in seaweed.env}
        os.environ.update(seaweed.env)  # the node processes inherit the credentials
        try:
            for index, config in enumerate(configs):
                results.append(measure("SeaweedFS S3", seaweed.fresh_url(f"failover-{index}"), seaweed.options,
                                       config, repeats, root / f"s3-{index}"))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return results


if __name__ == "__main__":
    sys.exit(main())

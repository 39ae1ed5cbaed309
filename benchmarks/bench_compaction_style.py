"""What an incremental snapshot uploads under each RocksDB compaction style, at 1% churn.

One shard's database, opened with the node's own options (``RocksResources``) but for the
compaction style, is loaded with random keys; then each round overwrites 1% of the keys and
takes a RocksDB checkpoint as the sync phase does. What the next upload would send is every SST
of the checkpoint that the previous one did not have: a file that compaction rewrote is new.
Also reported: state on disk (space amplification) and random multi-get throughput at the end.

    .venv/bin/python benchmarks/bench_compaction_style.py            # 60 checkpoints, ~4 minutes
    .venv/bin/python benchmarks/bench_compaction_style.py --rounds 12 --keys 200000
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time

import rocksdict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from stateserver.shard.rocks import RocksResources, RocksTuning  # noqa: E402

RESULTS = pathlib.Path(__file__).with_name("results") / "compaction_style.md"
STYLES = {"leveled": RocksTuning(compaction_style="level"), "universal (the default)": RocksTuning()}


@dataclasses.dataclass
class StyleRun:
    name: str
    uploaded: list[int]  # bytes per checkpoint, the first (full) one included
    state: list[int]
    load_keys_per_second: float
    gets_per_second: float

    def later_share(self) -> float:
        return sum(self.uploaded[2:]) / sum(self.state[2:])

    def full_rewrites(self) -> int:
        return sum(1 for up, size in zip(self.uploaded[2:], self.state[2:]) if up > 0.5 * size)


def sst_sizes(directory: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir() if p.name.endswith(".sst")}


def run_style(name: str, tuning: RocksTuning, root: pathlib.Path, keys: int, rounds: int, seed: int) -> StyleRun:
    rng = random.Random(seed)
    resources = RocksResources(tuning)
    db = rocksdict.Rdict(str(root / "db"), resources.options())
    db.set_write_options(resources.write_options())
    all_keys = [rng.randbytes(16) for _ in range(keys)]
    started = time.perf_counter()
    for start in range(0, keys, 1000):
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key in all_keys[start:start + 1000]:
            batch.put(key, rng.randbytes(120))
        db.write(batch)
    load_rate = keys / (time.perf_counter() - started)
    previous: dict[str, int] = {}
    uploaded, state = [], []
    for round_number in range(rounds):
        if round_number:
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key in rng.sample(all_keys, keys // 100):
                batch.put(key, rng.randbytes(120))
            db.write(batch)
        checkpoint = root / f"checkpoint-{round_number}"
        rocksdict.Checkpoint(db).create_checkpoint(str(checkpoint))
        current = sst_sizes(checkpoint)
        uploaded.append(sum(size for file, size in current.items() if previous.get(file) != size))
        state.append(sum(current.values()))
        previous = current
        shutil.rmtree(checkpoint)
        time.sleep(0.3)  # background compaction runs between checkpoints, as in a job
    sample = rng.sample(all_keys, min(100_000, keys))
    started = time.perf_counter()
    for start in range(0, len(sample), 1000):
        db[sample[start:start + 1000]]
    gets_rate = len(sample) / (time.perf_counter() - started)
    db.close()
    return StyleRun(name, uploaded, state, load_rate, gets_rate)


def report(runs: list[StyleRun], options: argparse.Namespace, command: str) -> str:
    mb = 1e6
    lines = [
        "# Incremental upload per checkpoint by RocksDB compaction style",
        "",
        f"Written by `benchmarks/bench_compaction_style.py` on {datetime.date.today()}. Reproduce with:",
        "", "```", command, "```", "",
        f"One shard's database with the node's options, {options.keys:,} random 16-byte keys with 120-byte "
        f"random values; then {options.rounds} checkpoints, each after overwriting 1% of the keys. "
        "'Uploaded' is what the next incremental snapshot sends: the SSTs of the checkpoint that the previous "
        "one did not have. Checkpoint 2 uploads most of the state under every style: the compaction of the "
        "initial load finishes after checkpoint 1. Steady state is checkpoint 3 onwards.",
        "",
        "| style | uploaded per checkpoint, steady state | full rewrites (> 50% uploaded) | largest state on disk | "
        "state on disk at the end | multi-get keys/s at the end | load keys/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        lines.append(
            f"| {run.name} | {100 * run.later_share():.1f}% (median {statistics.median(run.uploaded[2:]) / mb:.1f} MB) | "
            f"{run.full_rewrites()} of {len(run.uploaded) - 2} | {max(run.state) / mb:.1f} MB | {run.state[-1] / mb:.1f} MB | "
            f"{run.gets_per_second / 1e3:.0f}k | {run.load_keys_per_second / 1e3:.0f}k |")
    lines += ["", "Per checkpoint, MB uploaded / MB of state:", ""]
    for run in runs:
        cells = " ".join(f"{up / mb:.1f}/{size / mb:.0f}" for up, size in zip(run.uploaded, run.state))
        lines += [f"- {run.name}: {cells}"]
    lines += [
        "", "## Decision", "",
        "Shards use universal compaction with `max_size_amplification_percent = 50` (stateserver/shard/rocks.py). "
        "Keys spread evenly over key groups, so under leveled compaction every L0 -> L1 compaction of a shard "
        "smaller than the L1 target rewrites the whole shard, and the next snapshot uploads all of it. Universal "
        "compaction merges the small new runs among themselves and rewrites the whole shard only when newer runs "
        "reach half its size, which also bounds the state on disk, and what a restore downloads, at 1.5x the live "
        "data. Multi-get throughput and load rates are within this machine's run-to-run noise (two cores shared "
        "with other work); compare the upload columns.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=450_000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
    options = parser.parse_args()
    runs = []
    for name, tuning in STYLES.items():
        with tempfile.TemporaryDirectory(prefix="bench-compaction-style-") as root:
            runs.append(run_style(name, tuning, pathlib.Path(root), options.keys, options.rounds, options.seed))
        print(f"{name}: steady-state upload {100 * runs[-1].later_share():.1f}% per checkpoint", flush=True)
    command = ".venv/bin/python benchmarks/bench_compaction_style.py" + " ".join(
        [""] + sys.argv[1:])
    options.output.write_text(report(runs, options, command.rstrip()))
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()

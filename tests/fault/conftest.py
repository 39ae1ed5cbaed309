"""Options and fixtures of the fault suite (see test_fault_suite.py).

    --fault-trials N       trials to run (default 30: seeds base .. base+N-1, even on file://, odd on S3)
    --fault-base-seed B    the first seed (default 1)
    --fault-seed S         run only seed S: the replay of one trial
    --fault-summary PATH   write a markdown summary (trials, faults by kind, failures) to PATH
    --fault-trace          print every trial's trace, passing ones too (with -s)
"""
from __future__ import annotations

import collections
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault.cluster import FaultCluster, StoreTarget, running_cluster
from fault.driver import TrialResult, replay_command, store_for_seed

_RESULTS = pytest.StashKey[list[TrialResult]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fault", "seeded fault-injection trials (tests/fault)")
    group.addoption("--fault-trials", type=int, default=30, help="trials to run (default 30)")
    group.addoption("--fault-base-seed", type=int, default=1, help="the first trial's seed (default 1)")
    group.addoption("--fault-seed", type=int, default=None, help="run only this seed (replay a failed trial)")
    group.addoption("--fault-summary", default=None, help="write a markdown summary of the trials to this file")
    group.addoption("--fault-trace", action="store_true", help="print every trial's trace (with -s)")


def trial_seeds(config: pytest.Config) -> list[int]:
    seed = config.getoption("fault_seed", default=None)
    if seed is not None:
        return [seed]
    base = config.getoption("fault_base_seed", default=1)
    return list(range(base, base + config.getoption("fault_trials", default=30)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fault_seed" in metafunc.fixturenames:
        replay = metafunc.config.getoption("fault_seed", default=None) is not None
        seeds = trial_seeds(metafunc.config)
        metafunc.parametrize("fault_seed", seeds, ids=[f"{'replay-' if replay else ''}seed{s}-{store_for_seed(s)}"
                                                       for s in seeds])


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []


class ClusterPool:
    """One cluster per store kind, started when a trial first needs it, kept for the session."""

    def __init__(self, request: pytest.FixtureRequest, root: Path) -> None:
        self._request = request
        self._root = root
        self._stack: list[Iterator[FaultCluster]] = []
        self.clusters: dict[str, FaultCluster] = {}

    def get(self, kind: str) -> FaultCluster:
        if kind not in self.clusters:
            if kind == "file":
                target = StoreTarget("file", (self._root / "file-store").as_uri(), {})
            else:
                seaweed = self._request.getfixturevalue("seaweed")
                target = StoreTarget("s3", seaweed.fresh_url("fault"), dict(seaweed.options))
            context = running_cluster(self._root / f"{kind}-cluster", target)
            self.clusters[kind] = context.__enter__()
            self._stack.append(context)  # type: ignore[arg-type]
        return self.clusters[kind]

    def close(self) -> None:
        for context in reversed(self._stack):
            context.__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def fault_clusters(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    pool = ClusterPool(request, tmp_path_factory.mktemp("fault"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def record_trial(request: pytest.FixtureRequest) -> collections.abc.Callable[[TrialResult], None]:
    results = request.config.stash[_RESULTS]
    trace = request.config.getoption("fault_trace", default=False)

    def record(result: TrialResult) -> None:
        results.append(result)
        if trace:
            print(f"\nseed {result.seed} ({result.store}, {result.seconds:.1f}s):", *result.trace, sep="\n  ")
    return record


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("fault_summary", default=None)
    results = session.config.stash.get(_RESULTS, [])
    if path and results:
        command = os.environ.get("FAULT_SOAK_COMMAND") or ".venv/bin/python -m pytest " + " ".join(
            shlex.quote(a) for a in session.config.invocation_params.args)
        Path(path).write_text(summary_markdown(results, command=command))


def summary_markdown(results: list[TrialResult], *, command: str) -> str:
    faults: collections.Counter[str] = collections.Counter()
    for result in results:
        faults.update(result.faults)
    failed = [r for r in results if not r.ok]
    seconds = sum(r.seconds for r in results)
    by_store = collections.Counter(r.store for r in results)
    lines = [
        "# Fault soak", "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with:", "",
        "```sh", command, "```", "",
        "| trials | file:// | S3 (SeaweedFS) | failed | checkpoints checked | trial seconds (sum) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {len(results)} | {by_store['file']} | {by_store['s3']} | {len(failed)} | "
        f"{sum(r.checkpoints_checked for r in results)} | {seconds:.0f} |", "",
        "## Faults injected, by kind", "",
        "| fault | count |", "| --- | ---: |",
        *(f"| {kind} | {count} |" for kind, count in sorted(faults.items())), "",
        "## Failures", "",
    ]
    if not failed:
        lines.append("None.")
    else:
        lines += ["| seed | store | what broke | replay |", "| ---: | --- | --- | --- |"]
        for result in failed:
            what = " / ".join(f.replace("|", "\\|").replace("\n", " ")[:300] for f in result.failures[:2])
            lines.append(f"| {result.seed} | {result.store} | {what} | `{replay_command(result.seed)}` |")
    owners = [r.owner_records_after_gc for r in results if r.ok]
    if owners:
        lines += ["", f"Ownership records left after the final gc (per trial, passing trials): "
                      f"mean {sum(owners) / len(owners):.1f}, max {max(owners)}."]
    return "\n".join(lines) + "\n"

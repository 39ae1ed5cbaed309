"""A Bytewax dataflow with its keyed state in a node: crashed mid-run (TestingSource.ABORT),
resumed from Bytewax's recovery database, it ends with exactly the results of a run without a crash."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bytewax.recovery import init_db_dir
from bytewax.testing import TestingSource

from support.node import NodeProcess, unique_namespace

EVENTS = 1000
BATCH = 100  # source items per Bytewax epoch: a stateserver checkpoint every 100 events


def _recovery_dir(path: Path) -> Path:
    path.mkdir()
    init_db_dir(path, 1)
    return path


def _expected_state(wordcount: ModuleType, events: list[Any]) -> dict[str, int]:
    state: dict[str, int] = dict(Counter(word for word, _ in events))
    sums: defaultdict[str, int] = defaultdict(int)
    for word, (timestamp, amount) in events:
        sums[f"{word}@{timestamp // wordcount.WINDOW_SECONDS}"] += amount
    state.update(sums)
    return state


class Crash(Exception):
    pass


def _crashing(wordcount: ModuleType, *, at: int) -> Callable[..., list[Any]]:
    """The example's mapper, but the operator process dies at the ``at``-th event, in the middle of
    a Bytewax epoch whose writes already reached the node."""
    calls = 0

    def mapper(states: Any, word: str, event: tuple[int, int]) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == at:
            raise Crash("the operator process died")
        return wordcount.count_and_sum(states, word, event)  # type: ignore[no-any-return]

    return mapper


@pytest.fixture(scope="module")
def reference(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory, wordcount: ModuleType) -> list[Any]:
    """The outputs of a run without a crash; its final state is checked against Python's count."""
    events, expected = wordcount.make_events(EVENTS), []
    namespace = unique_namespace("bytewax-reference")
    wordcount.run(node.address, namespace, TestingSource(events, BATCH), epoch=1,
                  recovery_dir=_recovery_dir(tmp_path_factory.mktemp("reference") / "db"), out=expected)
    assert len(expected) == EVENTS
    assert wordcount.stored_state(node.address, namespace, events, epoch=2) == _expected_state(wordcount, events)
    return expected


def test_an_aborted_dataflow_resumes_with_exactly_the_results_of_a_run_without_a_crash(
        node: NodeProcess, tmp_path: Path, wordcount: ModuleType, reference: list[Any]) -> None:
    events = wordcount.make_events(EVENTS)
    namespace = unique_namespace("bytewax-abort")
    crash_at = EVENTS * 3 // 5 + BATCH // 2  # a batch cut short: the next execution resumes after it
    source = TestingSource([*events[:crash_at], TestingSource.ABORT(), *events[crash_at:]], BATCH)
    recovery = _recovery_dir(tmp_path / "db")
    before: list[Any] = []
    first = wordcount.run(node.address, namespace, source, epoch=1, recovery_dir=recovery, out=before, batch_ops=10)
    after: list[Any] = []
    resumed = wordcount.run(node.address, namespace, source, epoch=2, recovery_dir=recovery, out=after, batch_ops=10)

    assert len(before) == crash_at < EVENTS                  # attempt 1 really stopped mid-run
    assert resumed.restored_from == first.checkpoints[-1]    # attempt 2 restored attempt 1's last checkpoint
    assert before + after == reference                       # and replayed its source from exactly there
    assert wordcount.stored_state(node.address, namespace, events, epoch=3) == _expected_state(wordcount, events)


def test_a_run_without_an_attempt_number_allocates_its_epochs(
        node: NodeProcess, tmp_path: Path, wordcount: ModuleType, reference: list[Any]) -> None:
    """Issue 12, point 1: no attempt number to raise; each run allocates the next epoch. Fails on
    the code before it (StateServerBackend required ``epoch``)."""
    events = wordcount.make_events(EVENTS)
    namespace = unique_namespace("bytewax-auto-epoch")
    crash_at = EVENTS * 3 // 5 + BATCH // 2
    source = TestingSource([*events[:crash_at], TestingSource.ABORT(), *events[crash_at:]], BATCH)
    recovery = _recovery_dir(tmp_path / "db")
    before: list[Any] = []
    first = wordcount.run(node.address, namespace, source, epoch=None, recovery_dir=recovery, out=before, batch_ops=10)
    after: list[Any] = []
    resumed = wordcount.run(node.address, namespace, source, epoch=None, recovery_dir=recovery, out=after, batch_ops=10)

    assert resumed.restored_from == first.checkpoints[-1]
    assert first.checkpoints[-1] >> 32 == 1 and resumed.checkpoints[-1] >> 32 == 2  # epochs 1 and 2, allocated
    assert before + after == reference
    assert wordcount.stored_state(node.address, namespace, events, epoch=3) == _expected_state(wordcount, events)


def test_a_dataflow_that_crashed_mid_epoch_replays_the_epoch_and_counts_it_once(
        node: NodeProcess, tmp_path: Path, wordcount: ModuleType, reference: list[Any]) -> None:
    events = wordcount.make_events(EVENTS)
    namespace = unique_namespace("bytewax-mid-epoch")
    source, recovery = TestingSource(events, BATCH), _recovery_dir(tmp_path / "db")
    before: list[Any] = []
    with pytest.raises(Exception, match="on_batch"):  # Bytewax wraps the logic's Crash
        wordcount.run(node.address, namespace, source, epoch=1, recovery_dir=recovery, out=before, batch_ops=10,
                      mapper=_crashing(wordcount, at=EVENTS // 2 + BATCH // 3))  # a third into an epoch
    after: list[Any] = []
    resumed = wordcount.run(node.address, namespace, source, epoch=2, recovery_dir=recovery, out=after, batch_ops=10)

    assert resumed.restored_from is not None
    assert before == reference[: len(before)] and after == reference[len(reference) - len(after):]
    assert len(before) + len(after) == EVENTS                # the crashed epoch's outputs never left; it ran again
    assert wordcount.stored_state(node.address, namespace, events, epoch=3) == _expected_state(wordcount, events)


def test_a_dataflow_that_crashed_before_its_first_snapshot_starts_from_empty_state(
        node: NodeProcess, tmp_path: Path, wordcount: ModuleType, reference: list[Any]) -> None:
    events = wordcount.make_events(EVENTS)
    namespace = unique_namespace("bytewax-early-crash")
    source, recovery = TestingSource(events, BATCH), _recovery_dir(tmp_path / "db")
    with pytest.raises(Exception, match="on_batch"):
        wordcount.run(node.address, namespace, source, epoch=1, recovery_dir=recovery, out=[], batch_ops=10,
                      mapper=_crashing(wordcount, at=BATCH // 2))
    after: list[Any] = []
    resumed = wordcount.run(node.address, namespace, source, epoch=2, recovery_dir=recovery, out=after, batch_ops=10)
    assert resumed.restored_from is None                     # Bytewax had no snapshot: a fresh start,
    assert after == reference                                # from the empty initial checkpoint, not from
    assert wordcount.stored_state(node.address, namespace, events, epoch=3) == _expected_state(wordcount, events)


def test_importing_the_adapter_does_not_import_bytewax() -> None:
    check = "import sys, client, client.aio, client.bytewax; assert 'bytewax' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)

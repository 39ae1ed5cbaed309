"""The seeded fault suite (issue 11): random operations and random faults against a model.

Every trial is one seed (``fault.driver``): a stream job on three real nodes and a real store
(even seeds ``file://``, odd seeds SeaweedFS S3), writing every state kind, taking checkpoints,
and meeting node kills, object-store errors, competing writers, concurrent gc, rollbacks and fresh
starts. After the trial every committed checkpoint must pass ``stateserver verify --checksums``
and restore to exactly the model's state, with no write of a fenced writer in it; after
``stateserver gc --min-age 0`` no orphan may remain and nothing a checkpoint names may be gone.

Run:      .venv/bin/python -m pytest tests/fault                        (30 trials, CI)
Replay:   .venv/bin/python -m pytest tests/fault --fault-seed N         (printed by a failing trial)
Soak:     scripts/fault_soak.sh 500                                     (writes a markdown summary)

How the suite finds each defect of issue 11 when it is put back (by reverting its fix locally):

1. ``file://`` without fsync: not visible to SIGKILL of a node (the page cache survives a process
   kill); it needs a power loss, which this suite does not simulate. Its own test (fix-store)
   covers it; here it would only show with a store that drops unsynced writes.
2. A commit that does not confirm its objects, and gc that deletes them: the path is a
   ``rollback`` followed by a ``gc --retain 1`` that finishes before the next commit (the
   ``gc`` step waits for half of its runs), so that the next checkpoint names SSTs gc deleted:
   ``verify --checksums`` fails in the final check, or a recovery from it fails. NOT yet
   seen: 8 seeds with a rollback before a gc (290 326 416 496 1042 1260 1452 1558) and the
   first 30 seeds passed this check on today's code; a soak may find it, a targeted seed was
   not found in the time there was.
3. A fresh start that restores checkpoint 1 after retention retired it: ``fresh_start`` after
   more than ``--retained-checkpoints`` (2) commits opens the shards without a restore, and the
   job's read check sees the old job's values ("the job reads v[k3] = ...; it wrote None"), or
   the next checkpoint restores to other state than the model's, or (as on today's code, seeds
   21 and 30) the re-commit of checkpoint 1 is refused for good ("checkpoint 1 of shard ... is
   not newer than the confirmed checkpoint ...") and the job cannot recover.
Also found on today's code (tried on this branch, before the fixes landed):
- seed 44: a shard resumed without a restore after its node was SIGKILLed (``kill:idle``)
  serves what RocksDB had flushed, not what the writer wrote (invariant 8): the read-back after
  the resume finds the writes since the last checkpoint gone. Put back after fix-open (revert
  the RestoreRequired check in the open path), the same seed fails the same way.
- seed 22: a second owner at the job's epoch (``competitor:equal``) gets its writes into a
  committed checkpoint (invariant 11): "checkpoint ... holds writes of a fenced writer".
- invariant 9 (a failed batch followed by accepted ones) shows as a checkpoint that is not a
  prefix of the job's writes: "restores to other state than the model's".
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fault.driver import TrialResult, replay_command, run_trial, store_for_seed


def test_fault_trial(fault_seed: int, fault_clusters: Any, record_trial: Callable[[TrialResult], None],
                     tmp_path_factory: pytest.TempPathFactory) -> None:
    cluster = fault_clusters.get(store_for_seed(fault_seed))
    result = run_trial(fault_seed, cluster, tmp_path_factory.mktemp(f"trial{fault_seed}"))
    record_trial(result)
    if not result.ok:
        pytest.fail("\n".join([
            f"fault trial seed {fault_seed} ({result.store}, namespace {result.namespace}) failed:",
            *(f"  - {failure}" for failure in result.failures),
            f"replay: {replay_command(fault_seed)}",
            "trace (last 40 steps):", *(f"  {line}" for line in result.trace[-40:]),
            "node logs (this namespace, warnings, errors):", cluster.log_tails(result.namespace),
        ]), pytrace=False)

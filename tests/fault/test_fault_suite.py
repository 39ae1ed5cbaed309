"""The seeded fault suite (issue 11): random operations and random faults against a model.

Every trial is one seed (``fault.driver``): a stream job on three real nodes and a real store
(even seeds ``file://``, odd seeds SeaweedFS S3), writing every state kind, taking checkpoints,
and meeting node kills, object-store errors, competing writers, concurrent gc, rollbacks and fresh
starts, and (on file://) power losses. After the trial the latest acknowledged commit must still be
committed (or a later one), every committed checkpoint must pass ``stateserver verify --checksums``
and restore to exactly the model's state, with no write of a fenced writer in it; after
``stateserver gc --min-age 0`` no orphan may remain and nothing a checkpoint names may be gone.

Run:      .venv/bin/python -m pytest tests/fault                        (30 trials, CI)
Replay:   .venv/bin/python -m pytest tests/fault --fault-seed N         (printed by a failing trial)
          A replay meets the same operations, faults and placement (shards over the nodes in
          port order) as the run it replays; the moments of kills and what a power loss takes
          are timing, and may differ.
Soak:     scripts/fault_soak.sh 500                                     (writes a markdown summary)
Trace:    add ``-s --fault-trace`` to print every trial's steps, passing ones too

How the suite finds each defect of issue 11 when it is put back (a local patch, never committed;
seeds of the default 30-trial run, recorded before placement followed the seed, so a seed may now
meet other nodes; with the patch reverted every one of them passes):

1. ``file://`` never fsynced. Patch (either): in ``stateserver/store/_open.py``,
   ``_open_file`` returns ``reader`` (obstore's plain ``LocalStore``) instead of the
   ``DurableLocalStore(...)``; or in ``stateserver/store/_durable_local.py`` delete
   ``os.fsync(out.fileno())`` in ``_publish`` and make ``stateserver/store/durable_files.py``'s ``sync_directory`` ``return`` at once. Found by
   the power-loss fault (``power:*``, and half of the kills at upload/commit/after commit on
   file://; ``support.power_loss``): seeds 2, 4, 18 and 30 fail with "after the power loss of
   <node>, the latest committed checkpoint is none; the commit of checkpoint N was acknowledged
   (a commit lost)" (its metadata's name was not durable), seed 30 with the plain ``LocalStore``
   with "the job could not recover ... shared/...sst is missing". Deleting only the file fsync
   (directories still synced): seeds 2 and 18 fail on a ``metadata.pb`` truncated to 0 bytes.
2. gc deleted the files of the checkpoint a rolled-back owner reuses. Patch: in
   ``stateserver/snapshot/retention.py``, ``_pinned`` returns ``pinned`` (empty) right after
   ``pinned = set()`` (gc ignores the ``restored_from`` of the current owners). Found by the
   check after ``rollback_gc`` (and after half of the ``rollback`` steps) that the finished gc
   kept the checkpoint the job restored: seeds 26 (file) and 15 (S3) fail with "stateserver gc
   --retain 1 retired checkpoint N, which the job's current owners restored from and have not
   committed past". With the whole of defect 2 put back (also ``still_there = {name: True for name
   in candidates}`` in ``stateserver/snapshot/incremental_upload.py``: reuse without a HEAD; and
   ``return`` at the top of ``CheckpointCatalog._check_objects`` in ``stateserver/snapshot/catalog.py``:
   the commit trusts the manifests) and that check disabled, seed 26 fails as the issue says: "the
   first checkpoint after a rollback to N and gc: verify --checksums of checkpoint M failed: bad
   object .../shared/...sst: missing". (Seed 15 passed that run: which checkpoint its rollback and
   gc meet depends on timing.) With the pins alone removed, the snapshot's HEAD re-uploads what gc
   took, so nothing but the pin check sees it.
3. A fresh start that does not start empty. Patch (test side, as the fix is in the client's
   hooks): ``fresh_start`` in ``fault/driver.py`` opens with ``restore=None`` instead of
   ``"empty"``. Seeds 21, 29 (S3) and 30 (file) fail: "the job could not recover in 6 attempts:
   cannot resume shard ... as it is" (today's node refuses such an open with restore-required;
   before the open rules it served the old job's values: "the job reads v[k3] = ...").
Also found on earlier code (tried on the branch that added this suite, before the fixes landed):
- a shard resumed without a restore after its node was SIGKILLed (``kill:idle``) served what
  RocksDB had flushed, not what the writer wrote (invariant 8): the read-back after the resume
  found the writes since the last checkpoint gone.
- a second owner at the job's epoch (``competitor:equal``) got its writes into a committed
  checkpoint (invariant 11): "checkpoint ... holds writes of a fenced writer".
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

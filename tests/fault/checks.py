"""What must hold after a trial, checked against the store with the job stopped.

    committed_checkpoint_problems   every committed checkpoint was taken by the job (never by a
                                    fenced writer), passes ``stateserver verify --checksums``, and
                                    ``stateserver restore`` of it holds exactly the model's state,
                                    with no fenced write in it
    store_problems_after_gc         after ``stateserver gc --min-age 0``: no object that paths spells
                                    is left unreferenced, and every object a checkpoint names exists

``verify`` and ``restore`` run the real CLI in this process (``stateserver.cli.main.main``) to save an
interpreter start-up per checkpoint; ``gc`` runs as a subprocess, as an operator would run it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from fault.cluster import FaultCluster, run_cli_in_process, start_cli
from fault.model import Model, differences, fenced_writes, normalized
from fault.stored_state import read_data_dir
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.errors import NotFound
from stateserver.snapshot.retention import keys_named


def checkpoint_problems(cluster: FaultCluster, namespace: str, model: Model, checkpoint_id: int,
                        work_dir: Path, *, checksums: bool = True) -> list[str]:
    """One committed checkpoint against the model; [] if it holds exactly what it should."""
    if checkpoint_id not in model.checkpoints:
        return [f"checkpoint {checkpoint_id} is committed, but the job never took it (a fenced writer's commit?)"]
    catalog = CheckpointCatalog(cluster.store)
    store_args = [*cluster.target.cli_args, "--namespace", namespace, "--checkpoint", str(checkpoint_id)]
    code, output = run_cli_in_process("verify", *store_args, *(["--checksums"] if checksums else []))
    if code != 0:
        return [] if _gone(catalog, namespace, checkpoint_id) else [
            f"verify{' --checksums' if checksums else ''} of checkpoint {checkpoint_id} failed: {output.strip()}"]
    target = work_dir / f"restore-{checkpoint_id}"
    shutil.rmtree(target, ignore_errors=True)
    code, output = run_cli_in_process("restore", *store_args, "--data-dir", str(target))
    if code != 0:
        return [] if _gone(catalog, namespace, checkpoint_id) else [
            f"restore of checkpoint {checkpoint_id} failed: {output.strip()}"]
    try:
        stored = read_data_dir(target, namespace)
    finally:
        shutil.rmtree(target, ignore_errors=True)
    problems = []
    fenced = fenced_writes(stored)
    if fenced:
        problems.append(f"checkpoint {checkpoint_id} holds writes of a fenced writer: {fenced[:4]}")
    expected = normalized(model.checkpoints[checkpoint_id])
    if stored != expected:
        problems.append(f"checkpoint {checkpoint_id} restores to other state than the model's: "
                        + "; ".join(differences(expected, stored)))
    return problems


def _gone(catalog: CheckpointCatalog, namespace: str, checkpoint_id: int) -> bool:
    """Retention retired it while we looked: not a problem of the checkpoint."""
    try:
        catalog.load(namespace, checkpoint_id)
    except NotFound:
        return True
    return False


def committed_checkpoint_problems(cluster: FaultCluster, namespace: str, model: Model,
                                  work_dir: Path) -> tuple[list[str], int]:
    """Problems of every committed checkpoint, and how many checkpoints were checked."""
    ids = CheckpointCatalog(cluster.store).committed_ids(namespace)
    problems = []
    for checkpoint_id in ids:
        problems += checkpoint_problems(cluster, namespace, model, checkpoint_id, work_dir)
    return problems, len(ids)


def store_problems_after_gc(cluster: FaultCluster, namespace: str) -> tuple[list[str], int]:
    """Run ``stateserver gc --min-age 0`` (no job running), then look for orphans and missing
    objects. Also returns how many ownership records are left (reported, not judged here)."""
    gc = start_cli("gc", *cluster.target.cli_args, "--namespace", namespace, "--min-age", "0")
    output, _ = gc.communicate(timeout=120)
    problems = []
    if gc.returncode != 0:
        problems.append(f"stateserver gc --min-age 0 failed with exit code {gc.returncode}: {output.strip()}")
    catalog = CheckpointCatalog(cluster.store)
    referenced: set[str] = set()
    for checkpoint_id in catalog.committed_ids(namespace):
        metadata = catalog.load(namespace, checkpoint_id)
        referenced |= keys_named(metadata)
        bad = catalog.verify(metadata)
        if bad:
            problems.append(f"after gc, checkpoint {checkpoint_id} misses or has damaged objects: "
                            + ", ".join(str(p) for p in bad[:3]))
    objects = list(cluster.store.list(namespace))
    present = {meta.key for meta in objects}
    orphans = sorted(meta.key for meta in objects
                     if (parsed := paths.parse_key(meta.key)) is not None and parsed.namespace == namespace
                     and meta.key not in referenced)
    if orphans:
        problems.append(f"after gc --min-age 0, {len(orphans)} objects no checkpoint references remain: {orphans[:3]}")
    missing = sorted(referenced - present)
    if missing:
        problems.append(f"after gc, {len(missing)} objects that committed checkpoints name are gone: {missing[:3]}")
    owner_records = sum(1 for meta in objects if paths.parse_owner_record(meta.key) is not None)
    return problems, owner_records

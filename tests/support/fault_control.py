"""The test's side of ``support.fault_store``: writing its control file and counting its injections.

Kept apart from the store wrapper so that a test can steer a fault node without importing the
node's packages (the client's tests run from a client-only install).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

KINDS = ("error", "timeout", "lost_answer", "slow")


def write_control(path: Path, *, seed: int, generation: int, rules: list[dict[str, object]]) -> None:
    """Replace the control file atomically (the node re-reads it on its next store call)."""
    for rule in rules:
        if rule["kind"] not in KINDS:
            raise ValueError(f"unknown fault kind {rule['kind']!r}")
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"seed": seed, "generation": generation, "rules": rules}))
    os.replace(temporary, path)


def count_events(path: Path) -> dict[str, int]:
    """Injections so far by ``kind op``."""
    counts: dict[str, int] = {}
    try:
        lines = Path(f"{path}.events").read_text().splitlines()
    except FileNotFoundError:
        return counts
    for line in lines:
        if line.strip():
            counts[line.strip()] = counts.get(line.strip(), 0) + 1
    return counts

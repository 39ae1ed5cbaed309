"""What every benchmark's results file says about the machine and the packages, and its log line."""
from __future__ import annotations

import contextlib
import math
import platform
import time
from importlib import metadata
from pathlib import Path


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_report(report: str, output: Path, *, write: bool = True) -> None:
    """Print a results table and, unless told not to, write it to ``output``."""
    print(report)
    if write:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        log(f"wrote {output}")


def goal_row(label: str, value: float, target: float | None) -> str | None:
    """A row of a "ratio | measured | goal | met" table; None when the ratio was not measured."""
    if math.isnan(value):
        return None
    met = "" if target is None else ("yes" if value >= target else "**no**")
    return f"| {label} | {value:.2f}x | {'' if target is None else f'≥ {target:.1f}x'} | {met} |"

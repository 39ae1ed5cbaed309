"""Reading a node's Prometheus endpoint in tests, whatever its number of workers.

A node of several workers re-exposes each worker's series with a ``worker`` label
(stateserver/supervisor/metrics.py); a single process exposes them without it. ``total`` adds a
counter up over the workers, ``highest`` takes the largest gauge of any worker.
"""
from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(metrics_port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group("labels") or ""))
            samples.append(Sample(match.group("name"), labels, float(match.group("value"))))
    return samples


def _matching(samples: list[Sample], name: str, labels: dict[str, str]) -> list[float]:
    found = [s.value for s in samples
             if s.name == name and all(s.labels.get(key) == value for key, value in labels.items())]
    assert found, f"the node exports {name}{labels or ''}"
    return found


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name`` over every worker (the series with ``labels``)."""
    return sum(_matching(samples, name, labels))


def highest(samples: list[Sample], name: str, **labels: str) -> float:
    """The largest value of ``name`` on any worker."""
    return max(_matching(samples, name, labels))

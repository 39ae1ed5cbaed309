"""A batched call's keys split by shard (``ShardRouter.split``) and its answers put back: the
positions of a shard's part of the call, with whole-list operations (no Python bytecode per key)."""
from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any


def picked(items: Sequence[Any], chosen: list[int] | None) -> Sequence[Any]:
    """``items`` at the positions ``chosen`` (a shard's part of a call, from ``split``; None: all).
    An empty ``items`` (no map keys, say) stays empty."""
    if chosen is None or not items:
        return items
    return list(map(items.__getitem__, chosen))


def scatter(results: list[Any], chosen: list[int], values: Sequence[Any]) -> None:
    """Put a shard's part of a call's answers in their places: ``results[chosen[i]] = values[i]``."""
    collections.deque(map(results.__setitem__, chosen, values), maxlen=0)

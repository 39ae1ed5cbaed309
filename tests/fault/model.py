"""The pure model of the job's state: what the writer has acknowledged, and what each checkpoint holds.

State is ``{state name: {key: value}}`` with plain Python values: a value state holds a JSON value,
an aggregating state its fold (an int, or a list for ``list_append``), a list state its list, a map
state its dict. A key that holds nothing (deleted, cleared, an emptied map) is absent.

``Model.live`` is what the job has written since its last (re)start; ``snapshot_taken`` records it
as the content of a checkpoint at the sync phase, before the commit is tried, so that a commit
whose answer was lost is still known. ``reset_to`` is what a restore does to the job's view.

Writes of fenced writers carry the marker ``FENCED`` (values and map keys) or an operand of at
least ``FENCED_OPERAND``; ``fenced_writes`` finds them in any state, for the check that a fenced
write is visible nowhere.
"""
from __future__ import annotations

import copy
import dataclasses
import random
from typing import Any

State = dict[str, dict[str, Any]]

# name -> (kind, merge operator)
STATES: dict[str, tuple[str, str]] = {
    "v": ("value", ""),
    "l": ("list", ""),
    "m": ("map", ""),
    "sum": ("aggregating", "sum_int64"),
    "max": ("aggregating", "max_int64"),
    "min": ("aggregating", "min_int64"),
    "la": ("aggregating", "list_append"),
}
MAP_KEYS = ("a", "b", "c", "d")
FENCED = "FENCED"
FENCED_OPERAND = 1_000_000


@dataclasses.dataclass(frozen=True)
class Op:
    """One write: ``kind`` is put, delete, clear, merge, add, map_put or map_remove."""

    kind: str
    state: str
    key: str
    value: Any = None
    map_key: str = ""


def random_op(rng: random.Random, keys: list[str]) -> Op:
    state = rng.choice(list(STATES))
    key = rng.choice(keys)
    kind, operator = STATES[state]
    if rng.random() < 0.08:
        return Op("clear", state, key)
    if kind == "value":
        if rng.random() < 0.2:
            return Op("delete", state, key)
        return Op("put", state, key, rng.choice([rng.randint(-99, 99), f"s{rng.randint(0, 999)}"]))
    if kind == "list":
        return Op("add", state, key, rng.randint(0, 99))
    if kind == "map":
        map_key = rng.choice(MAP_KEYS)
        if rng.random() < 0.25:
            return Op("map_remove", state, key, map_key=map_key)
        return Op("map_put", state, key, rng.randint(0, 99), map_key)
    if operator == "list_append":
        return Op("merge", state, key, f"e{rng.randint(0, 99)}")
    return Op("merge", state, key, rng.randint(-50, 50))


def fenced_op(rng: random.Random, keys: list[str], tag: str) -> Op:
    """A write only a fenced (or impostor) writer makes: recognisable wherever it lands."""
    state = rng.choice(list(STATES))
    key = rng.choice(keys)
    kind, operator = STATES[state]
    marker = f"{FENCED}-{tag}"
    if kind == "value":
        return Op("put", state, key, marker)
    if kind == "list":
        return Op("add", state, key, marker)
    if kind == "map":
        return Op("map_put", state, key, marker, marker)
    if operator == "list_append":
        return Op("merge", state, key, marker)
    return Op("merge", state, key, FENCED_OPERAND if operator != "min_int64" else -FENCED_OPERAND)


def apply(state: State, op: Op) -> None:
    entries = state.setdefault(op.state, {})
    operator = STATES[op.state][1]
    if op.kind in ("delete", "clear"):
        entries.pop(op.key, None)
    elif op.kind == "put":
        entries[op.key] = op.value
    elif op.kind == "add":
        entries.setdefault(op.key, []).append(op.value)
    elif op.kind == "map_put":
        entries.setdefault(op.key, {})[op.map_key] = op.value
    elif op.kind == "map_remove":
        mapping = entries.get(op.key)
        if mapping is not None:
            mapping.pop(op.map_key, None)
            if not mapping:
                del entries[op.key]
    elif op.kind == "merge":
        current = entries.get(op.key)
        if operator == "sum_int64":
            entries[op.key] = (current or 0) + op.value
        elif operator == "max_int64":
            entries[op.key] = op.value if current is None else max(current, op.value)
        elif operator == "min_int64":
            entries[op.key] = op.value if current is None else min(current, op.value)
        else:
            entries[op.key] = [*(current or []), op.value]
    else:
        raise ValueError(f"unknown op {op.kind}")
    if not entries:
        del state[op.state]


def normalized(state: State) -> State:
    """Without empty states, for comparison."""
    return {name: dict(entries) for name, entries in state.items() if entries}


def fenced_writes(state: State) -> list[str]:
    found = []
    for name, entries in state.items():
        for key, value in entries.items():
            text = repr(value)
            if FENCED in text or (isinstance(value, int) and abs(value) >= FENCED_OPERAND):
                found.append(f"{name}[{key}]={text}")
    return found


def differences(expected: State, actual: State, limit: int = 8) -> list[str]:
    """Readable differences between two states, at most ``limit``."""
    found = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name, {}), actual.get(name, {})
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                found.append(f"{name}[{key}]: model {want.get(key)!r}, stored {got.get(key)!r}")
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


class Model:
    def __init__(self) -> None:
        self.live: State = {}
        # checkpoint id -> the state its sync phase captured (every commit that was tried)
        self.checkpoints: dict[int, State] = {}
        self.committed: set[int] = set()  # commits whose answer said committed

    def write(self, op: Op) -> None:
        apply(self.live, op)

    def snapshot_taken(self, checkpoint_id: int) -> None:
        self.checkpoints[checkpoint_id] = copy.deepcopy(self.live)

    def reset_to(self, checkpoint_id: int | None) -> None:
        """After a restore of ``checkpoint_id`` (None: a fresh, empty start)."""
        self.live = {} if checkpoint_id is None else copy.deepcopy(self.checkpoints[checkpoint_id])

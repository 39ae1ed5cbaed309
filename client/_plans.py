"""Plans: multi-step client operations written once, without I/O (the sans-IO pattern).

A plan is a generator that yields steps (``Call``, ``Each``, ``Sleep``, ``Concurrently``) and is
sent each step's outcome; a failed call is thrown into it as the translated ``StateServerError``.
The sync client runs plans with blocking gRPC calls, the asyncio client with grpc.aio; neither
holds any of the logic (retries, routing, checks) itself.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from typing import Any

from stateserver.client._errors import StateServerError


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One RPC: ``via`` is a connection, or the name of a node (the client's connection to it)."""

    via: Any
    method: str
    request: Any
    timeout: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Each:
    """Calls made at the same time; the outcome is their replies in order. With ``settle``, a
    failed call's outcome is its error instead of the plan being thrown the first error."""

    calls: Sequence[Call]
    settle: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Concurrently:
    """Sub-plans run at the same time (threads or tasks); the outcome is their results in order."""

    plans: Sequence[Plan[Any]]


Step = Call | Each | Sleep | Concurrently
Plan = Generator[Step, Any, Any]


class Stepper:
    """Drives one plan: ``first()``, then ``resume(outcome, error)`` after each step. ``done``
    tells when it finished; ``result`` is what it returned. The faces' loops stay a few lines."""

    __slots__ = ("_plan", "done", "result")

    def __init__(self, plan: Plan[Any]) -> None:
        self._plan = plan
        self.done = False
        self.result: Any = None

    def first(self) -> Step | None:
        return self.resume(None, None)

    def resume(self, outcome: Any, error: StateServerError | None) -> Step | None:
        try:
            return self._plan.throw(error) if error is not None else self._plan.send(outcome)
        except StopIteration as finished:
            self.done, self.result = True, finished.value
            return None


def settled(outcomes: Sequence[Any]) -> list[Any]:
    """The replies among ``Each(settle=True)`` outcomes."""
    return [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]

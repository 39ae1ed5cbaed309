"""The client's routing table: cluster names, where to dial them, which are down. No I/O here.

Placement uses cluster names (what the nodes list); a node may be dialled at another address it
advertises (``advertised``). A node found unreachable is routed around, not forgotten: it is due
for a probe after a backoff that doubles while it stays down, and the client's I/O layer (sync or
asyncio) probes it and reports the outcome here.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from stateserver.protocol import placement


@dataclasses.dataclass
class _Down:
    backoff: float
    probe_at: float


class RoutingTable:
    def __init__(self, seeds: Sequence[str], *, probe_backoff_min: float, probe_backoff_max: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seeds = list(seeds)
        self._nodes: list[str] = list(seeds)
        self._advertised: dict[str, str] = {}
        self._down: dict[str, _Down] = {}
        self._backoff = (probe_backoff_min, probe_backoff_max)
        self._clock = clock
        self._lock = threading.Lock()  # shards open from several threads at once
        self.refreshed_at: float | None = None  # when the node list last came from a node
        self.pinned = False  # the operator set the node list: it is not refreshed from the nodes

    @property
    def nodes(self) -> list[str]:
        return list(self._nodes)

    def set_nodes(self, nodes: Iterable[str]) -> None:
        """Use ``nodes`` as they are (an operator's own list); they are not refreshed from a node."""
        with self._lock:
            self._nodes = sorted(set(nodes))
            self.refreshed_at = self._clock()
            self.pinned = True

    def update(self, nodes: Sequence[str], advertised: Mapping[str, str]) -> None:
        """What a node said: the cluster's names (empty: a single node, the seeds) and their addresses."""
        with self._lock:
            self._nodes = sorted(set(nodes)) if nodes else list(self.seeds)
            self._advertised = {name: address for name, address in advertised.items() if address}
            for name in [name for name in self._down if name not in self._nodes and name not in self.seeds]:
                del self._down[name]  # left the cluster
            self.refreshed_at = self._clock()
            self.pinned = False

    def stale(self, max_age: float) -> bool:
        if self.pinned:
            return False
        return self.refreshed_at is None or (max_age > 0 and self._clock() - self.refreshed_at > max_age)

    def target(self, name: str) -> str:
        """Where to dial the node called ``name``."""
        return self._advertised.get(name, name)

    # -- availability -------------------------------------------------------------------------

    @property
    def unavailable(self) -> frozenset[str]:
        return frozenset(self._down)

    def mark_unavailable(self, name: str) -> None:
        """Route around ``name``; probe it again after a backoff (longer each time it fails)."""
        low, high = self._backoff
        with self._lock:
            down = self._down.get(name)
            backoff = low if down is None else min(high, down.backoff * 2)
            self._down[name] = _Down(backoff=backoff, probe_at=self._clock() + backoff)

    def mark_available(self, name: str) -> None:
        with self._lock:
            self._down.pop(name, None)

    def forget_unavailable(self) -> None:
        with self._lock:
            self._down.clear()

    def due_for_probe(self, reserve_for: float = 0.0) -> list[str]:
        """Unavailable nodes whose backoff has passed (every one of them when none is available).

        With ``reserve_for`` (the probe's timeout), a node handed out is not handed out again for
        that long unless its probe reports first: of many threads opening shards at once, one
        probes a dead node and the others do not each wait out its connect timeout."""
        now = self._clock()
        with self._lock:
            if all(name in self._down for name in self._nodes):
                return list(self._down)
            due = [name for name, down in self._down.items() if down.probe_at <= now]
            for name in due:
                self._down[name].probe_at = now + reserve_for
            return due

    def available(self) -> list[str]:
        return [name for name in self._nodes if name not in self._down]

    def placement_order(self, shard_id: str) -> list[str]:
        """The available nodes in the shard's placement order (computed over every node)."""
        return [name for name in placement.placement_order(shard_id, self._nodes) if name not in self._down]

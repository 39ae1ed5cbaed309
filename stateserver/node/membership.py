"""The node list of a running node, changing without restarts.

Where the list comes from: ``nodes`` (fixed entries; ``dns:NAME:PORT`` ones are resolved again
every ``membership_refresh_s``) or a nodes file (read again on SIGHUP, ``request_reload()``, and
whenever it changes on disk). A reload that fails (unreadable file, failing DNS) keeps the last
good list and logs why. Each node also asks its peers where they can be reached from outside
(their ``advertised_address``), so that NodeInfo can tell clients where to dial every node.

Changing the list changes only which node accepts a shard's next OpenShard
(``ClusterView.check_placement``); open shards stay where they are until their writer reopens them.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stateserver.node.cluster import ClusterView, Resolver, dns_resolver, resolve_nodes
from stateserver.config import read_nodes_file

log = logging.getLogger(__name__)

# How often the background thread looks at the nodes file and at peers not yet reached.
TICK_SECONDS = 1.0
# A peer (cluster name) -> the address it advertises, or None when it did not answer.
AskAdvertised = Callable[[str], "str | None"]


class Membership:
    """The node's current ``ClusterView``; ``start()`` keeps it current in a background thread."""

    def __init__(self, node_id: str, *, nodes: Sequence[str] = (), nodes_file: Path | None = None,
                 advertised_address: str = "", refresh_seconds: float = 10.0, resolver: Resolver = dns_resolver,
                 ask_advertised: AskAdvertised | None = None, clock: Callable[[], float] = time.monotonic,
                 workers_per_node: int = 1, known_advertised: Mapping[str, str] | None = None) -> None:
        self.node_id = node_id
        self._workers_per_node = workers_per_node  # each entry stands for this many workers
        self.advertised_address = advertised_address or node_id
        self._spec = tuple(nodes)
        self._nodes_file = nodes_file
        self._refresh_seconds = refresh_seconds
        self._resolver = resolver
        self._ask_advertised = ask_advertised
        self._clock = clock
        self._file_stamp: tuple[int, int, int] | None = None
        # peer name -> its advertised address, once it answered (or known from the start)
        self._peers: dict[str, str] = dict(known_advertised or {})
        self._view = ClusterView(node_id, (), {node_id: self.advertised_address})
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._reload_requested = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_refresh = 0.0

    # -- what the node serves by ---------------------------------------------------------------

    def view(self) -> ClusterView:
        return self._view

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._view.nodes

    def advertised_addresses(self) -> dict[str, str]:
        return dict(self._view.advertised)

    def check_placement(self, shard_id: str, unavailable: Sequence[str]) -> None:
        self._view.check_placement(shard_id, unavailable)

    @property
    def dynamic(self) -> bool:
        """Whether anything could change the list (a file, a name to resolve) or name a peer."""
        return self._nodes_file is not None or bool(self._spec)

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> tuple[str, ...]:
        """Resolve the list now; raises OSError or ValueError (the first load at start must work)."""
        spec = read_nodes_file(self._nodes_file) if self._nodes_file is not None else self._spec
        if self._nodes_file is not None:
            self._file_stamp = _stamp(self._nodes_file)
        nodes = resolve_nodes(spec, self._resolver, self._workers_per_node)
        self._publish(nodes)
        return nodes

    def reload(self) -> bool:
        """``load()``, keeping the last good list on failure; True if the list changed."""
        before = self._view.nodes
        try:
            nodes = self.load()
        except (OSError, ValueError) as exc:
            log.error("cannot reload the node list; keeping the last one",
                      extra={"source": str(self._nodes_file or ",".join(self._spec)), "error": str(exc),
                             "nodes": list(before)})
            return False
        if nodes != before:
            log.info("node list changed", extra={"nodes": list(nodes), "added": sorted(set(nodes) - set(before)),
                                                 "removed": sorted(set(before) - set(nodes))})
            if nodes and self.node_id not in nodes:
                log.warning("this node is not in the node list: it will be asked to open no shard",
                            extra={"node_id": self.node_id})
        return nodes != before

    def request_reload(self) -> None:
        """Reload soon, in the background thread (safe to call from a signal handler)."""
        self._reload_requested = True
        self._wake.set()

    def _publish(self, nodes: tuple[str, ...]) -> None:
        with self._lock:
            advertised = {name: address for name, address in self._peers.items() if name in nodes}
            advertised[self.node_id] = self.advertised_address
            self._view = ClusterView(self.node_id, nodes, advertised)

    # -- peers ---------------------------------------------------------------------------------

    def ask_peers(self, *, all_of_them: bool) -> None:
        """Learn peers' advertised addresses: those not known yet, or ``all_of_them`` again."""
        if self._ask_advertised is None:
            return
        for peer in self._view.nodes:
            if peer == self.node_id or (peer in self._peers and not all_of_them):
                continue
            address = self._ask_advertised(peer)
            if address:
                self._peers[peer] = address
        self._publish(self._view.nodes)

    # -- the background thread -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None and self.dynamic:
            self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(min(TICK_SECONDS, self._refresh_seconds) if self._refresh_seconds > 0 else None)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self._tick()
            except Exception:  # the thread must outlive any one failure
                log.exception("membership refresh failed")

    def _tick(self) -> None:
        now = self._clock()
        periodic = self._refresh_seconds > 0 and now >= self._next_refresh
        file_changed = (self._nodes_file is not None and self._refresh_seconds > 0
                        and _stamp(self._nodes_file) != self._file_stamp)
        if self._reload_requested or file_changed or (periodic and any(e.startswith("dns:") for e in self._spec)):
            self._reload_requested = False
            self.reload()
        if self._refresh_seconds > 0:
            self.ask_peers(all_of_them=periodic)
        if periodic:
            self._next_refresh = now + self._refresh_seconds


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

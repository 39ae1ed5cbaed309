"""Cluster membership from configuration, and the placement checks a node makes.

No consensus here: the node list comes from configuration (``--nodes a:1,b:2`` or
``dns:NAME:PORT``, which resolves to every address behind a name, as a Kubernetes headless
service gives), and a shard's node is a pure function of the shard id and that list. The
durable truth is object storage: ownership records there fence stale writers (ownership.py).
"""
from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterable, Sequence

from stateserver import placement
from stateserver.errors import WrongNode


def resolve_nodes(spec: Iterable[str]) -> tuple[str, ...]:
    """``host:port`` entries as given; ``dns:NAME:PORT`` expands to every address of NAME."""
    nodes: set[str] = set()
    for entry in spec:
        if entry.startswith("dns:"):
            name, _, port = entry[len("dns:"):].rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"expected dns:NAME:PORT, got {entry!r}")
            for info in socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM):
                host = info[4][0]
                nodes.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        else:
            nodes.add(entry)
    return tuple(sorted(nodes))


@dataclasses.dataclass(frozen=True)
class ClusterView:
    node_id: str
    nodes: tuple[str, ...]

    def check_placement(self, shard_id: str, unavailable: Sequence[str]) -> None:
        """Refuse a shard this node is not the first available node for."""
        if not self.nodes:
            return  # a single node serves every shard
        order = [node for node in placement.placement_order(shard_id, self.nodes) if node not in set(unavailable)]
        if not order:
            raise WrongNode(f"every node of shard {shard_id} is marked unavailable")
        if order[0] != self.node_id:
            raise WrongNode(f"shard {shard_id} belongs on node {order[0]}, not {self.node_id}; refresh the node list")

"""Cluster membership from configuration, and the placement checks a node makes.

No consensus here: the node list comes from configuration (``--nodes a:1,b:2``, a nodes file, or
``dns:NAME:PORT``, which resolves to every address behind a name, as a Kubernetes headless
service gives), and a shard's node is a pure function of the shard id and that list. The list may
change while nodes run (``membership.py``); the durable truth is object storage: ownership
records there fence stale writers (ownership.py).
"""
from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence

from stateserver.protocol import placement
from stateserver.protocol.errors import WrongNode
from stateserver.node.addresses import expand_node_list

# NAME, PORT -> the host:port entries behind NAME. Injectable, so a test can change what a name means.
Resolver = Callable[[str, int], Iterable[str]]


def dns_resolver(name: str, port: int) -> list[str]:
    """Every address of ``name`` from the system resolver, as host:port (IPv6 in brackets)."""
    entries = []
    for info in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM):
        host = str(info[4][0])
        entries.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return entries


def resolve_nodes(spec: Iterable[str], resolver: Resolver = dns_resolver, workers_per_node: int = 1) -> tuple[str, ...]:
    """``host:port`` entries as given; ``dns:NAME:PORT`` expands to every address of NAME; with
    several workers per node, each address to its workers' (``stateserver.node.addresses``)."""
    nodes: set[str] = set()
    for entry in spec:
        if entry.startswith("dns:"):
            name, _, port = entry[len("dns:"):].rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"expected dns:NAME:PORT, got {entry!r}")
            nodes.update(resolver(name, int(port)))
        else:
            nodes.add(entry)
    return tuple(sorted(expand_node_list(nodes, workers_per_node)))


@dataclasses.dataclass(frozen=True)
class ClusterView:
    """One node list, as it stood at one moment; ``advertised`` maps names to where clients dial them."""

    node_id: str
    nodes: tuple[str, ...]
    advertised: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def check_placement(self, shard_id: str, unavailable: Sequence[str]) -> None:
        """Refuse to open a shard this node is not the first available node for.

        Only OpenShard asks: a node that stopped being a shard's owner (the list changed) keeps
        serving the writer that has the shard open until that writer reopens it, so shards move
        only at a checkpoint boundary (a rebalance) or by a failover."""
        if not self.nodes:
            return  # a single node serves every shard
        order = [node for node in placement.placement_order(shard_id, self.nodes) if node not in set(unavailable)]
        if not order:
            raise WrongNode(f"every node of shard {shard_id} is marked unavailable")
        if order[0] != self.node_id:
            raise WrongNode(f"shard {shard_id} belongs on node {order[0]}, not {self.node_id}; refresh the node list")

"""Which node hosts a shard: rendezvous (highest-random-weight) hashing, with no I/O.

Clients and nodes compute it the same way from the shard id and the node list, so
placement needs no coordinator; adding a node moves only the shards it now wins.
"""
from __future__ import annotations

from collections.abc import Sequence

import xxhash


def placement_order(shard_id: str, nodes: Sequence[str]) -> list[str]:
    """Nodes in the order a shard prefers them: the owner first, then the failover order."""
    return sorted(nodes, key=lambda node: (xxhash.xxh3_64_intdigest(f"{node}|{shard_id}".encode()), node), reverse=True)


def owner(shard_id: str, nodes: Sequence[str]) -> str:
    if not nodes:
        raise ValueError("the node list is empty")
    return placement_order(shard_id, nodes)[0]

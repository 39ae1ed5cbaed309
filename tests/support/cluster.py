"""Several real nodes on loopback that know each other (``--nodes``), sharing one snapshot store."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from support.node import NodeProcess, free_loopback_port, start_node


@dataclass
class Cluster:
    root: Path
    snapshot_url: str
    ports: list[int]
    nodes: dict[str, NodeProcess]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def data_dir(self, address: str) -> Path:
        return self.root / address.replace(":", "_")

    def start(self, address: str, node_list: list[str] | None = None) -> NodeProcess:
        """(Re)start the node at ``address`` on its data directory."""
        port = int(address.rsplit(":", 1)[1])
        node = start_node(self.data_dir(address), port=port, extra_args=[
            "--snapshot-url", self.snapshot_url, "--nodes", ",".join(node_list or self.addresses)])
        self.nodes[address] = node
        return node

    def kill(self, address: str) -> None:
        self.nodes[address].kill()

    def add_node(self) -> str:
        """A new node whose node list has every node, itself included."""
        self.ports.append(free_loopback_port())
        address = self.addresses[-1]
        self.start(address)
        return address

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@contextlib.contextmanager
def run_cluster(root: Path, snapshot_url: str, size: int = 3) -> Iterator[Cluster]:
    cluster = Cluster(root=root, snapshot_url=snapshot_url, ports=[free_loopback_port() for _ in range(size)], nodes={})
    try:
        for address in cluster.addresses:
            cluster.start(address)
        yield cluster
    finally:
        cluster.stop()


def expected_counts(events: list[str]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for key in events:
        counts[key] = counts.get(key, 0) + 1
    return counts

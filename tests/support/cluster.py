"""Several real nodes on loopback that know each other (``--nodes``, or ``--nodes-file`` when the
cluster has a ``nodes_file``), sharing one snapshot store.

``addresses`` are the nodes' entries in the node list, and name the nodes here (start, kill);
placement and clients see ``members``: each node's workers (with ``STATESERVER_TEST_WORKERS=N``,
node ``host:port`` stands for ``host:port`` .. ``host:port+N-1``; with one worker, the same list).
A shard's owner, a session's address and NodeInfo's node list are members; ``node_of`` gives the
node a member belongs to."""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stateserver.protocol import placement
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import TEST_WORKERS, NodeProcess, NodeStartError, free_port_block, node_workers, start_node

START_ATTEMPTS = 3


@dataclass
class Cluster:
    root: Path
    snapshot_url: str
    ports: list[int]
    nodes: dict[str, NodeProcess]
    nodes_file: Path | None = None  # the nodes' list, read again when it changes or on SIGHUP
    node_args: dict[str, list[str]] = field(default_factory=dict)  # more flags of one node

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    @property
    def members(self) -> list[str]:
        """Every placement member: each node's workers, node by node."""
        return [member for address in self.addresses for member in node_workers(address)]

    def workers_of(self, address: str) -> list[str]:
        """The members node ``address`` stands for."""
        return node_workers(address)

    def node_of(self, member: str) -> str:
        """The node (its entry in ``addresses``) that member ``member`` is a worker of."""
        return next(address for address in self.addresses if member in node_workers(address))

    def shard_node(self, namespace: str, key_groups: object) -> str:
        """The node whose worker owns the shard of ``namespace`` for ``key_groups``."""
        return self.node_of(placement.owner(f"{namespace}/{key_groups}", self.members))

    def busiest_node(self, namespace: str, key_group_ranges: Iterable[object]) -> str:
        """The node that owns the most of these shards: the one whose loss a failover test needs,
        since placement on random ports may leave any given node with none."""
        hosted = Counter(self.shard_node(namespace, r) for r in key_group_ranges)
        return max(self.addresses, key=lambda address: hosted[address])

    def stub(self, member: str) -> state_pb2_grpc.StateServiceStub:
        """A raw stub to one member (a worker of one of the nodes)."""
        node = self.nodes[self.node_of(member)]
        return state_pb2_grpc.StateServiceStub(node.worker_channel(node.worker_addresses.index(member)))

    def open_shards(self, address: str) -> set[str]:
        """The shards open on node ``address``: on any of its workers."""
        return {shard for member in self.workers_of(address)
                for shard in self.stub(member).NodeInfo(pb.NodeInfoRequest(), timeout=10).open_shards}

    def data_dir(self, address: str) -> Path:
        return self.root / address.replace(":", "_")

    def start(self, address: str, node_list: list[str] | None = None) -> NodeProcess:
        """(Re)start the node at ``address`` on its data directory."""
        port = int(address.rsplit(":", 1)[1])
        membership = (["--nodes-file", str(self.nodes_file)] if self.nodes_file is not None and node_list is None
                      else ["--nodes", ",".join(node_list or self.addresses)])
        node = start_node(self.data_dir(address), port=port, extra_args=[
            "--snapshot-url", self.snapshot_url, *membership, *self.node_args.get(address, [])])
        self.nodes[address] = node
        return node

    def write_nodes_file(self, addresses: Sequence[str]) -> None:
        assert self.nodes_file is not None
        staging = self.nodes_file.with_suffix(".new")
        staging.write_text("".join(f"{address}\n" for address in addresses))
        staging.replace(self.nodes_file)  # whole or not at all, as a ConfigMap update

    def kill(self, address: str) -> None:
        self.nodes[address].kill()

    def add_node(self) -> str:
        """A new node whose node list has every node, itself included (with a nodes file: the
        file is rewritten first, and the running nodes follow it without a restart)."""
        self.ports.append(free_port_block(TEST_WORKERS))
        address = self.addresses[-1]
        if self.nodes_file is not None:
            self.write_nodes_file(self.addresses)
        self.start(address)
        return address

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@contextlib.contextmanager
def run_cluster(root: Path, snapshot_url: str, size: int = 3, *, nodes_file: bool = False,
                node_args: Sequence[Sequence[str]] = ()) -> Iterator[Cluster]:
    """``size`` nodes; ``node_args[i]`` are more flags of the i-th."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = _start_cluster(root, snapshot_url, size, nodes_file, node_args)
    try:
        yield cluster
    finally:
        cluster.stop()


def _start_cluster(root: Path, snapshot_url: str, size: int, nodes_file: bool,
                   node_args: Sequence[Sequence[str]]) -> Cluster:
    """Start the nodes; on other ports if one was taken in between (the node list names the ports,
    so every node starts again: the more ports a node takes, its workers', the likelier that is)."""
    for attempt in range(1, START_ATTEMPTS + 1):
        cluster = Cluster(root=root, snapshot_url=snapshot_url, nodes={},
                          ports=[free_port_block(TEST_WORKERS) for _ in range(size)],
                          nodes_file=root / "nodes" if nodes_file else None)
        cluster.node_args = {address: list(args) for address, args in zip(cluster.addresses, node_args)}
        if cluster.nodes_file is not None:
            cluster.write_nodes_file(cluster.addresses)
        try:
            for address in cluster.addresses:
                cluster.start(address)
            return cluster
        except NodeStartError as exc:
            cluster.stop()
            if attempt == START_ATTEMPTS or "Address already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


def expected_counts(events: list[str]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for key in events:
        counts[key] = counts.get(key, 0) + 1
    return counts

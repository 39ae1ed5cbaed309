"""Advertised addresses (issue 12, point 6), on real node processes: a node is dialled at the
address it advertises while placement keeps using its name in the node list, as the compose
cluster needs (its names resolve only inside the compose network).

Fails on the code before the change: ``--advertised-address`` did not exist (the nodes do not
start), and the client dialled the names themselves.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from stateserver.client import StateClient, ranges_for_parallelism
from stateserver.protocol import placement
from stateserver.protocol.v1 import state_pb2 as pb
from support.node import free_loopback_port, node_workers, run_node

pytestmark = pytest.mark.timeout(120)


def test_a_client_dials_the_advertised_address_of_a_node_whose_name_it_cannot_resolve(tmp_path: Path) -> None:
    port = free_loopback_port()
    name = f"node-a.invalid:{port}"  # .invalid never resolves (RFC 2606)
    # With several workers the name stands for one name per worker, each dialled at its own port.
    advertised = dict(zip(node_workers(name), node_workers(f"127.0.0.1:{port}")))
    with run_node(tmp_path / "a", port=port, extra_args=[
            "--nodes", name, "--node-id", name, "--advertised-address", f"127.0.0.1:{port}"]) as node:
        deadline = time.monotonic() + 10
        while dict((info := node.stub().NodeInfo(pb.NodeInfoRequest(), timeout=10)).advertised_addresses) != advertised:
            assert time.monotonic() < deadline, "the node learns where each of its workers is dialled"
            time.sleep(0.1)
        assert list(info.nodes) == sorted(advertised)
        with StateClient(f"127.0.0.1:{port}", timeout=10) as state:
            state.create_namespace("advertised", max_key_groups=16)
            writer = state.open_writer("advertised", key_groups="0-15", epoch=1)
            values = writer.value_state("v")
            values.put("k", "v")
            writer.flush()
            assert values.get("k") == "v"
            [session] = writer.sessions
            owner = placement.owner("advertised/0-15", list(advertised))
            assert (session.connection.address, session.connection.target) == (owner, advertised[owner])
            writer.close()


def test_nodes_learn_each_others_advertised_addresses_and_clients_follow(tmp_path: Path) -> None:
    ports = [free_loopback_port() for _ in range(2)]
    names = [f"127.0.0.1:{port}" for port in ports]
    members = [member for name in names for member in node_workers(name)]  # what placement sees
    advertised = {member: f"localhost:{member.rsplit(':', 1)[1]}" for member in members}
    with run_node(tmp_path / "a", port=ports[0], extra_args=[
            "--nodes", ",".join(names), "--advertised-address", f"localhost:{ports[0]}"]) as first, \
         run_node(tmp_path / "b", port=ports[1], extra_args=[
            "--nodes", ",".join(names), "--advertised-address", f"localhost:{ports[1]}"]):
        deadline = time.monotonic() + 10
        while dict(first.stub().NodeInfo(pb.NodeInfoRequest(), timeout=10).advertised_addresses) != advertised:
            assert time.monotonic() < deadline, "the first node learns where its peer is dialled"
            time.sleep(0.1)
        with StateClient(names[0], timeout=10) as state:
            state.create_namespace("advertised", max_key_groups=64)
            writer = state.open_writer("advertised", key_groups=ranges_for_parallelism(64, 16), epoch=1)
            for session in writer.sessions:
                assert session.connection.address == placement.owner(session.shard_id, members)
                assert session.connection.target == advertised[session.connection.address]
            hosting = {s.connection.address for s in writer.sessions}
            assert all(hosting & set(node_workers(name)) for name in names), "both nodes hold shards"
            writer.close()

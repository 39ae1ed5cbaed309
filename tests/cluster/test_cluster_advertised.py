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
from support.node import free_loopback_port, run_node

pytestmark = pytest.mark.timeout(120)


def test_a_client_dials_the_advertised_address_of_a_node_whose_name_it_cannot_resolve(tmp_path: Path) -> None:
    port = free_loopback_port()
    name = f"node-a.invalid:{port}"  # .invalid never resolves (RFC 2606)
    with run_node(tmp_path / "a", port=port, extra_args=[
            "--nodes", name, "--node-id", name, "--advertised-address", f"127.0.0.1:{port}"]) as node:
        info = node.stub().NodeInfo(pb.NodeInfoRequest(), timeout=10)
        assert list(info.nodes) == [name] and dict(info.advertised_addresses) == {name: f"127.0.0.1:{port}"}
        with StateClient(f"127.0.0.1:{port}", timeout=10) as state:
            state.create_namespace("advertised", max_key_groups=16)
            writer = state.open_writer("advertised", key_groups="0-15", epoch=1)
            values = writer.value_state("v")
            values.put("k", "v")
            writer.flush()
            assert values.get("k") == "v"
            [session] = writer.sessions
            assert (session.connection.address, session.connection.target) == (name, f"127.0.0.1:{port}")
            writer.close()


def test_nodes_learn_each_others_advertised_addresses_and_clients_follow(tmp_path: Path) -> None:
    ports = [free_loopback_port() for _ in range(2)]
    names = [f"127.0.0.1:{port}" for port in ports]
    advertised = {name: f"localhost:{port}" for name, port in zip(names, ports)}
    with run_node(tmp_path / "a", port=ports[0], extra_args=[
            "--nodes", ",".join(names), "--advertised-address", advertised[names[0]]]) as first, \
         run_node(tmp_path / "b", port=ports[1], extra_args=[
            "--nodes", ",".join(names), "--advertised-address", advertised[names[1]]]):
        deadline = time.monotonic() + 10
        while dict(first.stub().NodeInfo(pb.NodeInfoRequest(), timeout=10).advertised_addresses) != advertised:
            assert time.monotonic() < deadline, "the first node learns where its peer is dialled"
            time.sleep(0.1)
        with StateClient(names[0], timeout=10) as state:
            state.create_namespace("advertised", max_key_groups=64)
            writer = state.open_writer("advertised", key_groups=ranges_for_parallelism(64, 16), epoch=1)
            for session in writer.sessions:
                assert session.connection.address == placement.owner(session.shard_id, names)
                assert session.connection.target == advertised[session.connection.address]
            assert {s.connection.address for s in writer.sessions} == set(names), "both nodes hold shards"
            writer.close()

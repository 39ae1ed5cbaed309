"""The client's routing table and settings, without I/O: probes of unreachable nodes back off and
heal, the node list follows the nodes, and settings are checked and become channel arguments."""
from __future__ import annotations

import pytest

from stateserver.client import ClientSettings, InvalidArgumentError
from stateserver.client._routing import RoutingTable
from stateserver.client._settings import resolve_settings
from stateserver.protocol import placement


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def table(clock: Clock, seeds: list[str] | None = None) -> RoutingTable:
    return RoutingTable(seeds or ["a:1", "b:1", "c:1"], probe_backoff_min=0.1, probe_backoff_max=1.0, clock=clock)


def test_an_unreachable_node_is_probed_after_a_backoff_that_doubles_up_to_its_maximum() -> None:
    clock = Clock()
    routing = table(clock)
    routing.mark_unavailable("b:1")
    assert routing.available() == ["a:1", "c:1"] and routing.due_for_probe() == []
    waits = []
    for _ in range(6):
        start = clock.now
        while "b:1" not in routing.due_for_probe():
            clock.now += 0.001
        waits.append(round(clock.now - start, 1))
        routing.mark_unavailable("b:1")  # the probe failed
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    routing.mark_available("b:1")  # a probe answered
    assert routing.available() == ["a:1", "b:1", "c:1"] and not routing.unavailable


def test_a_node_due_for_a_probe_is_handed_to_one_caller_until_its_probe_reports_or_times_out() -> None:
    """Many threads open shards at once in a recovery; before, each of them got the dead node to
    probe and waited out its connect timeout (``due_for_probe`` took no reservation)."""
    clock = Clock()
    routing = table(clock)
    routing.mark_unavailable("b:1")
    clock.now += 0.1
    assert routing.due_for_probe(reserve_for=5.0) == ["b:1"]
    assert routing.due_for_probe(reserve_for=5.0) == [], "a second thread does not probe it meanwhile"
    clock.now += 5.0
    assert routing.due_for_probe(reserve_for=5.0) == ["b:1"], "a probe that never reported is given up"
    routing.mark_unavailable("b:1")  # the probe failed: the usual backoff from now
    clock.now += 0.2
    assert routing.due_for_probe(reserve_for=5.0) == ["b:1"]


def test_with_every_node_unreachable_all_are_due_at_once() -> None:
    """The old client had nothing left to route by (IndexError, ``max()`` of nothing); now every
    node is probed again rather than waiting out its backoff."""
    clock = Clock()
    routing = table(clock)
    for name in ("a:1", "b:1", "c:1"):
        routing.mark_unavailable(name)
    assert routing.available() == []
    assert sorted(routing.due_for_probe()) == ["a:1", "b:1", "c:1"]


def test_placement_skips_unreachable_nodes_and_comes_back_to_the_owner() -> None:
    routing = table(Clock())
    shard = "ns/0-63"
    owner = placement.owner(shard, routing.nodes)
    routing.mark_unavailable(owner)
    assert routing.placement_order(shard)[0] != owner
    routing.mark_available(owner)
    assert routing.placement_order(shard)[0] == owner


def test_the_node_list_and_advertised_addresses_come_from_the_nodes() -> None:
    clock = Clock()
    routing = table(clock, seeds=["127.0.0.1:7701"])
    assert routing.stale(10.0)
    routing.update(["node-1:7700", "node-2:7700"], {"node-1:7700": "127.0.0.1:7701", "node-2:7700": "127.0.0.1:7702"})
    assert routing.nodes == ["node-1:7700", "node-2:7700"]
    assert routing.target("node-2:7700") == "127.0.0.1:7702" and routing.target("other:1") == "other:1"
    assert not routing.stale(10.0)
    clock.now += 11
    assert routing.stale(10.0) and not routing.stale(0)
    routing.mark_unavailable("node-2:7700")
    routing.update(["node-1:7700"], {})  # node-2 left the cluster: nothing left to probe
    assert not routing.unavailable and routing.target("node-1:7700") == "node-1:7700"
    routing.update([], {})  # a single node without a list: the seeds
    assert routing.nodes == ["127.0.0.1:7701"]


def test_a_node_list_set_by_the_operator_is_kept_until_an_explicit_refresh() -> None:
    clock = Clock()
    routing = table(clock)
    routing.set_nodes(["x:1", "y:1"])
    clock.now += 1000
    assert routing.pinned and not routing.stale(10.0)
    routing.update(["x:1"], {})
    assert not routing.pinned


def test_client_settings_defaults_become_channel_arguments() -> None:
    options = dict(ClientSettings().channel_options())
    assert options["grpc.max_reconnect_backoff_ms"] == 500 and options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000 and options["grpc.max_send_message_length"] == 64 << 20
    # The older keyword arguments still work and override the settings.
    resolved = resolve_settings(ClientSettings(connect_timeout=5.0), timeout=2.0, max_message_bytes=1 << 20)
    assert (resolved.request_timeout, resolved.connect_timeout, resolved.max_message_bytes) == (2.0, 2.0, 1 << 20)


@pytest.mark.parametrize("bad", [{"connect_timeout": 0}, {"request_timeout": -1.0}, {"retry_attempts": 0},
                                 {"probe_backoff_min": 2.0, "probe_backoff_max": 1.0},
                                 {"keepalive_time": float("inf")}, {"node_list_max_age": -1},
                                 {"retry_attempts": 1.5}])
def test_bad_client_settings_are_refused_with_a_clear_error(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid client settings"):
        ClientSettings(**bad)

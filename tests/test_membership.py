"""A node's membership changes without a restart: an injected resolver stands for DNS, a nodes
file for a static list; a failed reload keeps the last good list; peers' advertised addresses are
learnt and published; and a changed list decides only where shards open next."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from stateserver.protocol import placement
from stateserver.node.cluster import ClusterView, resolve_nodes
from stateserver.protocol.errors import WrongNode
from stateserver.node.membership import Membership


class Names:
    """A resolver a test can change: name -> hosts."""

    def __init__(self, **names: list[str]) -> None:
        self.names = names
        self.calls = 0

    def __call__(self, name: str, port: int) -> list[str]:
        self.calls += 1
        if name not in self.names:
            raise OSError(f"cannot resolve {name}")
        return [f"{host}:{port}" for host in self.names[name]]


def test_dns_entries_are_resolved_again_when_the_name_changes() -> None:
    names = Names(stateserver=["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    membership = Membership("10.0.0.1:7700", nodes=["dns:stateserver:7700"], resolver=names)
    assert membership.load() == ("10.0.0.1:7700", "10.0.0.2:7700", "10.0.0.3:7700")
    names.names["stateserver"].append("10.0.0.4")  # a fourth pod became ready
    assert membership.reload() is True
    assert membership.nodes == ("10.0.0.1:7700", "10.0.0.2:7700", "10.0.0.3:7700", "10.0.0.4:7700")
    assert membership.reload() is False


def test_a_failed_reload_keeps_the_last_good_list(tmp_path: Path) -> None:
    names = Names(stateserver=["10.0.0.1"])
    membership = Membership("10.0.0.1:7700", nodes=["dns:stateserver:7700"], resolver=names)
    membership.load()
    del names.names["stateserver"]  # DNS is down
    assert membership.reload() is False and membership.nodes == ("10.0.0.1:7700",)

    nodes_file = tmp_path / "nodes"
    nodes_file.write_text("a:1\nb:1\n")
    from_file = Membership("a:1", nodes_file=nodes_file)
    from_file.load()
    nodes_file.write_text("a:1\nthis is not an address\n")
    assert from_file.reload() is False and from_file.nodes == ("a:1", "b:1")
    nodes_file.unlink()
    assert from_file.reload() is False and from_file.nodes == ("a:1", "b:1")


def test_the_background_thread_follows_the_file_on_change_and_on_request(tmp_path: Path) -> None:
    nodes_file = tmp_path / "nodes"
    nodes_file.write_text("a:1\nb:1\nc:1\n")
    membership = Membership("a:1", nodes_file=nodes_file, refresh_seconds=0.05)
    membership.load()
    membership.start()
    try:
        nodes_file.write_text("a:1\nb:1\nc:1\nd:1\n")  # watched: its stamp changes
        _wait_for(lambda: membership.nodes == ("a:1", "b:1", "c:1", "d:1"))
    finally:
        membership.stop()

    # Without periodic checks (0), only a request (SIGHUP) reloads.
    quiet = Membership("a:1", nodes_file=nodes_file, refresh_seconds=0)
    quiet.load()
    quiet.start()
    try:
        nodes_file.write_text("a:1\n")
        time.sleep(0.3)
        assert quiet.nodes == ("a:1", "b:1", "c:1", "d:1")
        quiet.request_reload()
        _wait_for(lambda: quiet.nodes == ("a:1",))
    finally:
        quiet.stop()


def test_peers_advertised_addresses_are_learnt_and_published() -> None:
    answers = {"node-2:7700": "127.0.0.1:7702", "node-3:7700": None}  # node-3 does not answer yet
    asked: list[str] = []

    def ask(peer: str) -> str | None:
        asked.append(peer)
        return answers[peer]

    membership = Membership("node-1:7700", nodes=["node-1:7700", "node-2:7700", "node-3:7700"],
                            advertised_address="127.0.0.1:7701", ask_advertised=ask)
    membership.load()
    assert membership.advertised_addresses() == {"node-1:7700": "127.0.0.1:7701"}
    membership.ask_peers(all_of_them=False)
    assert membership.advertised_addresses() == {"node-1:7700": "127.0.0.1:7701", "node-2:7700": "127.0.0.1:7702"}
    answers["node-3:7700"] = "127.0.0.1:7703"
    asked.clear()
    membership.ask_peers(all_of_them=False)
    assert asked == ["node-3:7700"], "a peer already known is asked again only by a periodic refresh"
    assert membership.advertised_addresses()["node-3:7700"] == "127.0.0.1:7703"


def test_without_an_advertised_address_a_node_advertises_its_name() -> None:
    membership = Membership("node-1:7700", nodes=["node-1:7700"])
    membership.load()
    assert membership.advertised_addresses() == {"node-1:7700": "node-1:7700"}


def test_a_new_node_list_moves_only_the_opens_of_the_shards_the_new_node_wins() -> None:
    three = ("a:1", "b:1", "c:1")
    four = (*three, "d:1")
    shards = [f"ns/{i}-{i}" for i in range(256)]
    won = [s for s in shards if placement.owner(s, four) == "d:1"]
    assert 0.15 * len(shards) < len(won) < 0.35 * len(shards), "about a quarter"
    for shard in shards:
        owner_before, owner_after = placement.owner(shard, three), placement.owner(shard, four)
        assert owner_after in (owner_before, "d:1"), "no shard moves between the old nodes"
        view = ClusterView(owner_before, four)
        if owner_after == "d:1":
            with pytest.raises(WrongNode):
                view.check_placement(shard, [])
        else:
            view.check_placement(shard, [])


def test_resolve_nodes_takes_an_injected_resolver() -> None:
    assert resolve_nodes(["x:1", "dns:svc:9"], Names(svc=["10.0.0.2", "10.0.0.3"])) == ("10.0.0.2:9", "10.0.0.3:9", "x:1")


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


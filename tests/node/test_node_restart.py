"""A node stopped gracefully (SIGTERM) and started again on the same data directory serves the
flushed state to the writer that owned it. The write-ahead log is off by default: the graceful
close flushes memtables and records that each shard directory is whole (clean_close)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stateserver.client import FencedError, RestoreRequiredError, StateClient, Writer
from support.node import NodeProcess


def write_everything(address: str, namespace: str) -> Writer:
    with StateClient(address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=3)
        writer.value_state("v").put_many({f"k{i}": i for i in range(500)})
        writer.value_state("v").delete("k0")
        writer.list_state("l").add_all("k", range(50))
        writer.map_state("m").put_all("k", {"a": 1, "b": 2})
        writer.aggregating_state("s", merge_operator="sum_int64").merge("k", -42)
        writer.aggregating_state("h", merge_operator="list_append").merge("k", "x")
        writer.flush()  # acknowledged, but the writer does not close its shards
        return writer


@pytest.mark.timeout(120)
def test_flushed_state_survives_a_graceful_restart(fresh_node: Callable[..., NodeProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = fresh_node(data_dir)
    writer = write_everything(first.address, "restarted")
    assert first.stop() == 0  # SIGTERM: drained and exited cleanly
    assert not first.is_alive()

    # Same data directory, another port; with several workers the same port: a worker's port
    # names it in the placement list, so it decides which worker a shard (and its copy) lives on.
    port = first.port if first.workers > 1 else None
    second = fresh_node(data_dir, port=port)
    assert second.is_serving()
    with StateClient(second.address) as client:
        assert client.max_key_groups("restarted") == 128
        # The stored epoch survived too: an older epoch is still fenced.
        with pytest.raises(FencedError):
            client.open_writer("restarted", key_groups="0-63", epoch=2)
        # Another writer never gets the owner's local copy as it is; it must restore.
        with pytest.raises(RestoreRequiredError):
            client.open_writer("restarted", key_groups=["0-63", "64-127"], epoch=4)
        client.reopen(writer)  # the owner resumes its own shards
        values = writer.value_state("v")
        assert values.get_many([f"k{i}" for i in range(500)]) == [None] + list(range(1, 500))
        events = writer.list_state("l")
        assert events.get("k") == list(range(50))
        assert list(writer.map_state("m").items("k")) == [("a", 1), ("b", 2)]
        assert writer.aggregating_state("s", merge_operator="sum_int64").get("k") == -42
        assert writer.aggregating_state("h", merge_operator="list_append").get("k") == ["x"]
        # Writing goes on where it left off: appends after the last stored position.
        events.add("k", 50)
        writer.flush()
        assert list(events.iterate("k", page_size=7)) == list(range(51))
        writer.close()

    assert second.stop() == 0
    third = fresh_node(data_dir, port=port)
    with StateClient(third.address) as client:
        client.reopen(writer)
        assert writer.list_state("l").get("k") == list(range(51))


@pytest.mark.timeout(60)
def test_a_stopped_node_is_gone_and_health_says_so(fresh_node: Callable[..., NodeProcess]) -> None:
    node = fresh_node()
    assert node.is_serving()
    node.stop()
    assert not node.is_alive()
    assert not node.is_serving()

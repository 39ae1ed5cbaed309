"""The layout of a node's workers, without processes: the address rule (a node entry host:port
with N workers stands for ports port .. port+N-1, in static lists, dns: entries and nodes files
alike), each worker's configuration, the default worker count and the settings checks. Fails on
the code before the change: there was no ``stateserver.node`` (ImportError)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stateserver.node.cluster import resolve_nodes
from stateserver.node.membership import Membership
from stateserver.node.addresses import expand_node_list, worker_address
from stateserver.supervisor.worker_config import MIN_SHARE_BYTES, worker_config
from stateserver.supervisor.sizing import WORKER_FIXED_BYTES, resolve_workers
from stateserver.config import SettingsError, load_settings

MiB = 1 << 20


def settings(tmp_path: Path, **flags: object):  # type: ignore[no-untyped-def]
    return load_settings(flags={"data_dir": tmp_path / "data", **flags}, environ={}, config_file=None)


def test_a_node_entry_stands_for_its_workers_ports() -> None:
    assert worker_address("node-1:7700", 2) == "node-1:7702"
    assert worker_address("[::1]:7700", 1) == "[::1]:7701"
    assert expand_node_list(["a:7700", "b:7700"], 2) == ["a:7700", "a:7701", "b:7700", "b:7701"]
    assert expand_node_list(["a:7700"], 1) == ["a:7700"]
    with pytest.raises(ValueError, match="above 65535"):
        worker_address("a:65535", 1)


def test_static_dns_and_file_lists_expand_alike(tmp_path: Path) -> None:
    def resolver(name: str, port: int) -> list[str]:
        return [f"10.0.0.{i}:{port}" for i in (1, 2)] if name == "svc" else []

    assert resolve_nodes(["x:1", "dns:svc:9"], resolver, workers_per_node=2) == (
        "10.0.0.1:10", "10.0.0.1:9", "10.0.0.2:10", "10.0.0.2:9", "x:1", "x:2")
    nodes_file = tmp_path / "nodes"
    nodes_file.write_text("a:7700\nb:7700\n")
    membership = Membership("a:7701", nodes_file=nodes_file, workers_per_node=2)
    assert membership.load() == ("a:7700", "a:7701", "b:7700", "b:7701")


def test_each_worker_gets_its_port_directory_identity_and_share(tmp_path: Path) -> None:
    alone = settings(tmp_path, port=7700, block_cache_bytes="1GiB", write_buffer_bytes="512MiB",
                     advertised_address="public:9000")
    config = worker_config(alone, 1, 4, metrics_port=12345)
    assert (config.port, config.data_dir, config.node_id) == (7701, tmp_path / "data" / "worker-1", "127.0.0.1:7701")
    assert config.advertised_address == "public:9001"
    assert config.nodes == ("127.0.0.1:7700",) and config.workers_per_node == 4, "a node alone lists its workers"
    assert (config.tuning.block_cache_bytes, config.tuning.write_buffer_bytes) == (256 * MiB, 128 * MiB)
    assert config.snapshot_url == (tmp_path / "data" / "snapshots").as_uri(), "every worker shares the node's store"
    assert (config.metrics_port, config.supervised) == (12345, True)
    small = worker_config(settings(tmp_path, block_cache_bytes="32MiB"), 0, 4)
    assert small.tuning.block_cache_bytes == MIN_SHARE_BYTES
    cluster = settings(tmp_path, nodes="a:7700,b:7700", node_id="b:7700", port=7700)
    assert worker_config(cluster, 1, 2).nodes == ("a:7700", "b:7700")
    assert worker_config(cluster, 1, 2).node_id == "b:7701"


def test_default_worker_count_is_capped_by_memory_and_ports() -> None:
    def count(**overrides: object) -> int:
        arguments: dict[str, object] = dict(workers=0, port=7700, metrics_port=0, block_cache_bytes=1024 * MiB,
                                            write_buffer_bytes=512 * MiB, memory_budget_bytes=64 << 30)
        return resolve_workers(**(arguments | overrides))  # type: ignore[arg-type]

    assert count(workers=3) == 3, "an explicit count is taken as it is"
    assert count(memory_budget_bytes=1536 * MiB + 2 * WORKER_FIXED_BYTES) == min(2, count())
    assert count(memory_budget_bytes=1024 * MiB) == 1, "at least one, however small the budget"
    assert count(port=65535) == 1
    assert count(metrics_port=7701) == 1, "worker ports stop below the metrics port"


def test_settings_refuse_worker_ports_that_collide_or_overflow(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="the workers' ports 7700-7703"):
        settings(tmp_path, port=7700, workers=4, metrics_port=7702)
    with pytest.raises(SettingsError, match="leaves room for 2 workers"):
        settings(tmp_path, port=65534, workers=3)
    assert settings(tmp_path, workers=2, metrics_port=7702).workers == 2

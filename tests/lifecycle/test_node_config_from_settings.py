"""Settings (flags > environment > file > defaults) become the node's configuration in one place."""
from __future__ import annotations

from pathlib import Path

from stateserver.cli.main import build_parser
from stateserver.protocol.limits import Limits
from stateserver.shard.rocks import RocksTuning
from stateserver.node.server import config_from_settings
from stateserver.config import settings_from_args


def test_every_setting_reaches_the_node_config(tmp_path: Path) -> None:
    config_file = tmp_path / "stateserver.toml"
    config_file.write_text('port = 7001\nworker_threads = 4\nblock_cache_bytes = "64MiB"\n'
                           'nodes = ["127.0.0.1:7002", "other:7700"]\n[snapshot_options]\nregion = "eu"\n')
    options = build_parser().parse_args([
        "serve", "--config", str(config_file), "--data-dir", str(tmp_path / "data"), "--port", "7002",
        "--metrics-port", "9102", "--max-batch-ops", "500", "--drain-seconds", "2.5"])
    environ = {"STATESERVER_WORKER_THREADS": "6", "STATESERVER_WRITE_BUFFER_BYTES": "32MiB",
               "STATESERVER_SNAPSHOT_URL": "s3://bucket/prefix", "STATESERVER_SNAPSHOT_OPTIONS": "endpoint=http://s3"}
    config = config_from_settings(settings_from_args(options, environ))

    assert (config.host, config.port, config.data_dir) == ("127.0.0.1", 7002, tmp_path / "data")  # flag over file
    assert config.worker_threads == 6  # environment over file
    assert config.node_id == "127.0.0.1:7002" and config.nodes == ("127.0.0.1:7002", "other:7700")
    assert config.tuning == RocksTuning(block_cache_bytes=64 << 20, write_buffer_bytes=32 << 20)
    assert config.limits == Limits(max_batch_ops=500, max_read_reply_bytes=(64 << 20) * 3 // 4)
    assert config.drain_seconds == 2.5 and config.max_message_bytes == 64 << 20
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 9102)
    assert config.snapshot_url == "s3://bucket/prefix"
    assert dict(config.snapshot_options) == {"region": "eu", "endpoint": "http://s3"}
    assert config.upload_threads == 8


def test_dns_node_lists_are_accepted(tmp_path: Path) -> None:
    options = build_parser().parse_args(["serve", "--data-dir", str(tmp_path), "--nodes", "dns:stateserver:7700"])
    assert config_from_settings(settings_from_args(options, {})).nodes == ("dns:stateserver:7700",)

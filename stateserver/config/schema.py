"""The settings of a node: one frozen value, each field with its parser, meaning and default, and
how each source spells it (``--flag``, ``STATESERVER_<SETTING>``, the TOML key)."""
from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stateserver.config.parsers import (
    UNITS, KiB, MiB, Parser, parse_choice, parse_count, parse_file, parse_host, parse_node_id, parse_nodes,
    parse_optional_address, parse_options, parse_path, parse_port, parse_seconds, parse_size, parse_snapshot_url,
)
from stateserver.protocol.limits import Limits

ENV_PREFIX = "STATESERVER_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
# gRPC sizes messages with a signed 32-bit integer.
_MAX_GRPC_MESSAGE = (1 << 31) - 1


class SettingsError(ValueError):
    """Invalid settings; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid settings:\n" + "\n".join(f"  {p}" for p in self.problems))


def _setting(default: Any, parse: Parser, meaning: str, *, shown_default: str | None = None,
             metavar: str = "VALUE", **field: Any) -> Any:
    metadata = {"parse": parse, "meaning": meaning, "shown_default": shown_default, "metavar": metavar}
    if "default_factory" not in field:
        field["default"] = default
    return dataclasses.field(metadata=metadata, **field)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """One node's configuration. Build it with ``load_settings``, which validates it and fills in
    ``snapshot_url`` and ``node_id`` when they are left empty; constructing it directly checks nothing."""

    host: str = _setting("127.0.0.1", parse_host, "Address the gRPC server binds to.", metavar="HOST")
    port: int = _setting(7700, parse_port(1), "gRPC port.", metavar="PORT")
    data_dir: Path | None = _setting(
        None, parse_path, "Directory of the shards' RocksDB files and local checkpoints. Required to serve; "
        "created if missing; must be writable.", shown_default="(required)", metavar="DIR")
    metrics_port: int = _setting(0, parse_port(0), "Port of the Prometheus /metrics endpoint; 0 turns it off.",
                                 metavar="PORT")
    metrics_host: str = _setting("127.0.0.1", parse_host, "Address the metrics endpoint binds to.", metavar="HOST")
    snapshot_url: str = _setting(
        "", parse_snapshot_url, "Where snapshots go: file:///abs/path, s3://bucket/prefix, gs://bucket/prefix, "
        "az://container/prefix or memory://.", shown_default="file://<data_dir>/snapshots", metavar="URL")
    snapshot_options: Mapping[str, str] = _setting(
        None, parse_options, "Object store options such as endpoint, region, access_key_id, secret_access_key; "
        "merged key by key across sources. Never logged.", shown_default="(none)", metavar="KEY=VALUE",
        default_factory=dict, repr=False, hash=False)
    max_message_bytes: int = _setting(64 * MiB, parse_size(_MAX_GRPC_MESSAGE), "Largest gRPC message, each way.",
                                      metavar="BYTES")
    block_cache_bytes: int = _setting(256 * MiB, parse_size(), "RocksDB block cache shared by all shards.",
                                      metavar="BYTES")
    write_buffer_bytes: int = _setting(128 * MiB, parse_size(), "Memtable budget shared by all shards of the node.",
                                       metavar="BYTES")
    workers: int = _setting(
        0, parse_count(0), "Worker processes of the node, each on its own port (port + i), data directory "
        "(<data_dir>/worker-<i>) and share of block_cache_bytes and write_buffer_bytes, under one supervisor; each "
        "entry host:port of nodes stands for ports port .. port+workers-1, so every node of a cluster runs the same "
        "number. 1: one process, as before workers existed. 0: one per core, as many as memory_budget_bytes allows.",
        shown_default="0 (one per core, within memory_budget_bytes)", metavar="N")
    memory_budget_bytes: int | None = _setting(
        None, parse_size(), "Memory the node may use; caps the default number of workers so that block_cache_bytes + "
        "write_buffer_bytes + a fixed cost per worker process fits in it.",
        shown_default="(the machine's or container's memory)", metavar="BYTES")
    max_key_bytes: int = _setting(64 * KiB, parse_size(), "Largest key a request may carry.", metavar="BYTES")
    max_value_bytes: int = _setting(16 * MiB, parse_size(), "Largest value a request may carry.", metavar="BYTES")
    max_batch_ops: int = _setting(100_000, parse_count(1), "Most operations in one write batch.", metavar="N")
    worker_threads: int = _setting(16, parse_count(1), "Threads serving gRPC requests.", metavar="N")
    retained_checkpoints: int = _setting(
        3, parse_count(1), "Committed checkpoints kept per namespace: after each commit the node deletes, in the "
        "background, what only older checkpoints reference (as `stateserver gc --retain N`).", metavar="N")
    orphan_sweep_interval_s: float = _setting(
        3600.0, parse_seconds, "How often, per namespace, retention after a commit also lists the namespace to reclaim "
        "uploads no checkpoint references (failed checkpoints); other commits retire checkpoints by reference "
        "counting, without listing (as `stateserver gc` sweeps).", metavar="SECONDS")
    upload_threads: int = _setting(8, parse_count(1), "Concurrent snapshot file uploads.", metavar="N")
    nodes: tuple[str, ...] = _setting(
        (), parse_nodes, "Cluster members as host:port, or dns:NAME:PORT for every address of NAME (resolved again "
        "every membership_refresh_s); the same list on every node, and clients learn it from the nodes; empty "
        "means this node alone.", shown_default="(this node alone)", metavar="HOST:PORT,...")
    nodes_file: Path | None = _setting(
        None, parse_file, "A file listing the cluster members instead of nodes (host:port or dns:NAME:PORT, one a "
        "line or comma-separated, # comments); read again on SIGHUP and whenever it changes, without a restart.",
        shown_default="(none)", metavar="FILE")
    membership_refresh_s: float = _setting(
        10.0, parse_seconds, "How often dns: entries of the node list are resolved again and peers asked for their "
        "advertised addresses; the nodes file is checked for changes every second. 0 turns both off (SIGHUP "
        "still reloads).", metavar="SECONDS")
    node_id: str = _setting("", parse_node_id, "This node's own entry in nodes.", shown_default="<host>:<port>",
                            metavar="HOST:PORT")
    advertised_address: str = _setting(
        "", parse_optional_address, "Where clients dial this node, when that differs from its entry in nodes (as "
        "Kafka's advertised.listeners): a published port, a load balancer. Placement still uses node_id.",
        shown_default="<node_id>", metavar="HOST:PORT")
    drain_seconds: float = _setting(10.0, parse_seconds, "On shutdown, how long in-flight requests may finish.",
                                    metavar="SECONDS")
    log_level: str = _setting("info", parse_choice(*LOG_LEVELS), "One of " + ", ".join(LOG_LEVELS) + ".",
                              metavar="LEVEL")
    log_format: str = _setting("json", parse_choice(*LOG_FORMATS), "json (one object a line) or text (key=value).",
                               metavar="FORMAT")

    def __post_init__(self) -> None:
        # Freeze the two containers so that a frozen Settings really cannot change.
        object.__setattr__(self, "snapshot_options", types.MappingProxyType(dict(self.snapshot_options)))
        object.__setattr__(self, "nodes", tuple(self.nodes))

    def __reduce__(self) -> tuple[Any, ...]:
        # A mappingproxy cannot be pickled; rebuild through the constructor (multiprocessing, copy).
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return (_rebuild_settings, (fields | {"snapshot_options": dict(self.snapshot_options)},))

    def limits(self) -> Limits:
        """The request limits the service enforces."""
        # A whole-list reply must leave room in a message for framing; keep Limits' 3/4 ratio.
        return Limits(max_key_bytes=self.max_key_bytes, max_value_bytes=self.max_value_bytes,
                      max_batch_ops=self.max_batch_ops, max_read_reply_bytes=self.max_message_bytes * 3 // 4)

    def loggable(self) -> dict[str, object]:
        """The settings as plain values for a startup log line, with option values hidden."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["data_dir"] = str(self.data_dir) if self.data_dir else None
        fields["nodes_file"] = str(self.nodes_file) if self.nodes_file else None
        fields["nodes"] = list(self.nodes)
        fields["snapshot_options"] = {key: "<hidden>" for key in self.snapshot_options}
        return fields


def _rebuild_settings(fields: dict[str, Any]) -> Settings:
    return Settings(**fields)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def flag_for(name: str) -> str:
    return "--snapshot-option" if name == "snapshot_options" else "--" + name.replace("_", "-")


def env_var_for(name: str) -> str:
    return ENV_PREFIX + name.upper()


@dataclasses.dataclass(frozen=True, kw_only=True)
class SettingInfo:
    """One row of the settings table in docs/configuration.md."""

    name: str
    flag: str
    env_var: str
    default: str
    meaning: str


def _shown_default(field: dataclasses.Field[Any]) -> str:
    if field.metadata["shown_default"] is not None:
        return str(field.metadata["shown_default"])
    value = field.default
    if isinstance(value, int) and value >= KiB and value % KiB == 0 and field.metadata["metavar"] == "BYTES":
        unit = next(u for u in ("GiB", "MiB", "KiB") if value % UNITS[u.lower()] == 0)
        return f"{value // UNITS[unit.lower()]}{unit}"
    return str(value)


SETTINGS_TABLE: tuple[SettingInfo, ...] = tuple(
    SettingInfo(name=f.name, flag=flag_for(f.name), env_var=env_var_for(f.name), default=_shown_default(f),
                meaning=f.metadata["meaning"])
    for f in FIELDS.values()
)

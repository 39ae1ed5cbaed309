"""A node's settings: one frozen value, loaded from flags, environment, a TOML file and defaults.

Precedence, highest first: command-line flags, ``STATESERVER_<SETTING>`` environment variables,
the TOML config file, the defaults declared on ``Settings``. ``snapshot_options`` is merged key by
key across those sources, so a config file can name the endpoint while the environment carries the
credentials.

Everything is validated at load, and every problem is reported at once in one ``SettingsError``
naming where the bad value came from: a node that starts half-configured fails later, on another
machine, far from the cause.

``docs/configuration.md`` embeds ``render_settings_table()``; regenerate it with
``python -m stateserver.settings``.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import ipaddress
import re
import tempfile
import tomllib
import types
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stateserver.limits import Limits

__all__ = [
    "CONFIG_ENV_VAR",
    "SETTINGS_TABLE",
    "SettingInfo",
    "Settings",
    "SettingsError",
    "add_settings_arguments",
    "load_settings",
    "parse_node_list",
    "read_nodes_file",
    "render_settings_table",
    "settings_from_args",
]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
ENV_PREFIX = "STATESERVER_"
CONFIG_ENV_VAR = "STATESERVER_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
SNAPSHOT_SCHEMES = ("file", "s3", "gs", "az", "memory")
# gRPC sizes messages with a signed 32-bit integer.
_MAX_GRPC_MESSAGE = (1 << 31) - 1


class SettingsError(ValueError):
    """Invalid settings; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid settings:\n" + "\n".join(f"  {p}" for p in self.problems))


class _Invalid(Exception):
    """Raised by a parser: ``expected`` says what a valid value looks like."""

    def __init__(self, expected: str, detail: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.detail = detail


Parser = Callable[[object], object]


# ---- parsers: raw value from a flag, the environment (a string) or TOML (typed) -> value --------

def _as_str(raw: object) -> str:
    if isinstance(raw, Path):
        return str(raw)
    if not isinstance(raw, str):
        raise _Invalid("must be a string")
    return raw.strip()


def _as_int(raw: object, expected: str) -> int:
    if isinstance(raw, bool):  # bool is an int subclass; 'port = true' is a mistake, not 1
        raise _Invalid(expected)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip(), 10)
        except ValueError:
            pass
    raise _Invalid(expected)


def _port(lowest: int) -> Parser:
    expected = f"must be an integer from {lowest} to 65535"

    def parse(raw: object) -> int:
        value = _as_int(raw, expected)
        if not lowest <= value <= 65535:
            raise _Invalid(expected)
        return value
    return parse


def _count(lowest: int) -> Parser:
    expected = f"must be an integer of at least {lowest}"

    def parse(raw: object) -> int:
        value = _as_int(raw, expected)
        if value < lowest:
            raise _Invalid(expected)
        return value
    return parse


_SIZE = re.compile(r"(\d+(?:_\d+)*)\s*(KiB|MiB|GiB)?", re.IGNORECASE)
_UNITS = {"": 1, "kib": KiB, "mib": MiB, "gib": GiB}


def _size(highest: int | None = None) -> Parser:
    expected = "must be a positive number of bytes, or a size such as 512KiB, 64MiB or 2GiB"
    if highest is not None:
        expected += f", at most {highest}"

    def parse(raw: object) -> int:
        if isinstance(raw, str) and (match := _SIZE.fullmatch(raw.strip())):
            value = int(match[1]) * _UNITS[(match[2] or "").lower()]
        else:
            value = _as_int(raw, expected)
        if value < 1 or (highest is not None and value > highest):
            raise _Invalid(expected)
        return value
    return parse


def _seconds(raw: object) -> float:
    expected = "must be a number of seconds, 0 or more"
    if isinstance(raw, bool):
        raise _Invalid(expected)
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Invalid(expected) from None
    if not 0 <= value < float("inf"):
        raise _Invalid(expected)
    return value


def _choice(*names: str) -> Parser:
    expected = "must be one of " + ", ".join(names)

    def parse(raw: object) -> str:
        value = _as_str(raw).lower()
        if value not in names:
            raise _Invalid(expected)
        return value
    return parse


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_host(text: str) -> bool:
    """An IP address (IPv6 bare or in brackets) or an RFC 1123 host name."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        return ":" in text and _is_ip(text)
    if _is_ip(text):
        return True
    labels = text.removesuffix(".").split(".")
    # An all-numeric last label is a mistyped IPv4 address such as 256.1.1.1, not a name.
    return (0 < len(text) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _host(raw: object) -> str:
    value = _as_str(raw)
    if not _is_host(value):
        raise _Invalid("must be an IP address or a host name, such as 127.0.0.1, 0.0.0.0, :: or node-1")
    return value.removeprefix("[").removesuffix("]")


def _address(text: str) -> str:
    host, colon, port = text.rpartition(":")
    try:
        if not colon or not _is_host(host) or (":" in host and not host.startswith("[")):
            raise _Invalid("")
        _port(1)(port)
    except _Invalid:
        raise _Invalid("must be host:port, such as node-1:7700 or [::1]:7700") from None
    return text


def _node_id(raw: object) -> str:
    value = _as_str(raw)
    return _address(value) if value else ""


def _node_entry(text: str) -> str:
    """host:port, or dns:NAME:PORT: every address behind a name, as a Kubernetes headless service gives."""
    if text.startswith("dns:"):
        try:
            _address(text.removeprefix("dns:"))
        except _Invalid:
            raise _Invalid("must be dns:NAME:PORT, such as dns:stateserver:7700") from None
        return text
    return _address(text)


def _nodes(raw: object) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise _Invalid("must be a list of host:port addresses (comma-separated in flags and the environment)")
    nodes = tuple(_node_entry(_as_str(item)) for item in items if not isinstance(item, str) or item.strip())
    twice = sorted({node for node in nodes if nodes.count(node) > 1})
    if twice:
        raise _Invalid(f"must list each node once ({', '.join(twice)} appear more than once)")
    return nodes


def parse_node_list(raw: object) -> tuple[str, ...]:
    """A node list (host:port and dns:NAME:PORT entries), as the ``nodes`` setting takes it; ValueError if bad."""
    try:
        return _nodes(raw)
    except _Invalid as exc:
        raise ValueError(f"the node list {exc.expected}, got {raw!r}") from None


def read_nodes_file(path: Path) -> tuple[str, ...]:
    """Entries of a nodes file: host:port or dns:NAME:PORT, one a line or comma-separated; # comments.
    Raises OSError (unreadable) or ValueError (a bad entry)."""
    text = path.read_text(encoding="utf-8")
    entries = [item.strip() for line in text.splitlines() for item in line.split("#", 1)[0].split(",")]
    return parse_node_list([entry for entry in entries if entry])


def _optional_address(raw: object) -> str:
    value = _as_str(raw)
    return _address(value) if value else ""


def _file(raw: object) -> Path:
    text = _as_str(raw)
    if not text or "\x00" in text:
        raise _Invalid("must be a file path")
    return Path(text).expanduser().absolute()


def _path(raw: object) -> Path:
    text = _as_str(raw)
    if not text or "\x00" in text:
        raise _Invalid("must be a directory path")
    return Path(text).expanduser().absolute()


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_GS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_AZ_CONTAINER = re.compile(r"[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])?")


def _snapshot_url(raw: object) -> str:
    text = _as_str(raw)
    if not text:
        return ""  # resolved to file://<data_dir>/snapshots at load
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in SNAPSHOT_SCHEMES or "://" not in text:
        raise _Invalid("must be a URL starting with " + ", ".join(f"{s}://" for s in SNAPSHOT_SCHEMES))
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise _Invalid("must not carry a query, fragment or credentials; put them in snapshot_options")
    if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
        raise _Invalid("must be an absolute file URL, such as file:///var/lib/stateserver/snapshots")
    bucket_rules = {"s3": (_S3_BUCKET, "bucket"), "gs": (_GS_BUCKET, "bucket"), "az": (_AZ_CONTAINER, "container")}
    if parts.scheme in bucket_rules:
        rule, what = bucket_rules[parts.scheme]
        if not rule.fullmatch(parts.netloc) or ".." in parts.netloc:
            raise _Invalid(f"must name a valid {what}, such as {parts.scheme}://my-{what}/prefix")
    if parts.scheme == "memory" and parts.path.strip("/"):
        raise _Invalid("must be memory:// or memory://name")
    return text


_OPTION_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def _options(raw: object) -> dict[str, str]:
    expected = "must be KEY=VALUE pairs (comma-separated in the environment) or a TOML table of strings"
    if isinstance(raw, str):
        raw = [pair for pair in raw.split(",") if pair.strip()]
    if isinstance(raw, (list, tuple)):
        pairs = [str(pair).partition("=") for pair in raw]
        if not all(eq for _, eq, _ in pairs):
            raise _Invalid(expected)
        raw = {key.strip(): value.strip() for key, _, value in pairs}
    if not isinstance(raw, Mapping):
        raise _Invalid(expected)
    options: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key) or isinstance(value, (dict, list)):
            raise _Invalid(expected)
        # TOML gives numbers and booleans their own types; the object store wants strings.
        options[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return options


# ---- the settings ----------------------------------------------------------------------------------

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

    host: str = _setting("127.0.0.1", _host, "Address the gRPC server binds to.", metavar="HOST")
    port: int = _setting(7700, _port(1), "gRPC port.", metavar="PORT")
    data_dir: Path | None = _setting(
        None, _path, "Directory of the shards' RocksDB files and local checkpoints. Required to serve; "
        "created if missing; must be writable.", shown_default="(required)", metavar="DIR")
    metrics_port: int = _setting(0, _port(0), "Port of the Prometheus /metrics endpoint; 0 turns it off.",
                                 metavar="PORT")
    metrics_host: str = _setting("127.0.0.1", _host, "Address the metrics endpoint binds to.", metavar="HOST")
    snapshot_url: str = _setting(
        "", _snapshot_url, "Where snapshots go: file:///abs/path, s3://bucket/prefix, gs://bucket/prefix, "
        "az://container/prefix or memory://.", shown_default="file://<data_dir>/snapshots", metavar="URL")
    snapshot_options: Mapping[str, str] = _setting(
        None, _options, "Object store options such as endpoint, region, access_key_id, secret_access_key; "
        "merged key by key across sources. Never logged.", shown_default="(none)", metavar="KEY=VALUE",
        default_factory=dict, repr=False, hash=False)
    max_message_bytes: int = _setting(64 * MiB, _size(_MAX_GRPC_MESSAGE), "Largest gRPC message, each way.",
                                      metavar="BYTES")
    block_cache_bytes: int = _setting(256 * MiB, _size(), "RocksDB block cache shared by all shards.",
                                      metavar="BYTES")
    write_buffer_bytes: int = _setting(128 * MiB, _size(), "Memtable budget shared by all shards of the node.",
                                       metavar="BYTES")
    workers: int = _setting(
        0, _count(0), "Worker processes of the node, each on its own port (port + i), data directory "
        "(<data_dir>/worker-<i>) and share of block_cache_bytes and write_buffer_bytes, under one supervisor; each "
        "entry host:port of nodes stands for ports port .. port+workers-1, so every node of a cluster runs the same "
        "number. 1: one process, as before workers existed. 0: one per core, as many as memory_budget_bytes allows.",
        shown_default="0 (one per core, within memory_budget_bytes)", metavar="N")
    memory_budget_bytes: int | None = _setting(
        None, _size(), "Memory the node may use; caps the default number of workers so that block_cache_bytes + "
        "write_buffer_bytes + a fixed cost per worker process fits in it.",
        shown_default="(the machine's or container's memory)", metavar="BYTES")
    max_key_bytes: int = _setting(64 * KiB, _size(), "Largest key a request may carry.", metavar="BYTES")
    max_value_bytes: int = _setting(16 * MiB, _size(), "Largest value a request may carry.", metavar="BYTES")
    max_batch_ops: int = _setting(100_000, _count(1), "Most operations in one write batch.", metavar="N")
    worker_threads: int = _setting(16, _count(1), "Threads serving gRPC requests.", metavar="N")
    retained_checkpoints: int = _setting(
        3, _count(1), "Committed checkpoints kept per namespace: after each commit the node deletes, in the "
        "background, what only older checkpoints reference (as `stateserver gc --retain N`).", metavar="N")
    orphan_sweep_interval_s: float = _setting(
        3600.0, _seconds, "How often, per namespace, retention after a commit also lists the namespace to reclaim "
        "uploads no checkpoint references (failed checkpoints); other commits retire checkpoints by reference "
        "counting, without listing (as `stateserver gc` sweeps).", metavar="SECONDS")
    upload_threads: int = _setting(8, _count(1), "Concurrent snapshot file uploads.", metavar="N")
    nodes: tuple[str, ...] = _setting(
        (), _nodes, "Cluster members as host:port, or dns:NAME:PORT for every address of NAME (resolved again "
        "every membership_refresh_s); the same list on every node, and clients learn it from the nodes; empty "
        "means this node alone.", shown_default="(this node alone)", metavar="HOST:PORT,...")
    nodes_file: Path | None = _setting(
        None, _file, "A file listing the cluster members instead of nodes (host:port or dns:NAME:PORT, one a line or "
        "comma-separated, # comments); read again on SIGHUP and whenever it changes, without a restart.",
        shown_default="(none)", metavar="FILE")
    membership_refresh_s: float = _setting(
        10.0, _seconds, "How often dns: entries of the node list are resolved again and peers asked for their "
        "advertised addresses; the nodes file is checked for changes every second. 0 turns both off (SIGHUP "
        "still reloads).", metavar="SECONDS")
    node_id: str = _setting("", _node_id, "This node's own entry in nodes.", shown_default="<host>:<port>",
                            metavar="HOST:PORT")
    advertised_address: str = _setting(
        "", _optional_address, "Where clients dial this node, when that differs from its entry in nodes (as "
        "Kafka's advertised.listeners): a published port, a load balancer. Placement still uses node_id.",
        shown_default="<node_id>", metavar="HOST:PORT")
    drain_seconds: float = _setting(10.0, _seconds, "On shutdown, how long in-flight requests may finish.",
                                    metavar="SECONDS")
    log_level: str = _setting("info", _choice(*LOG_LEVELS), "One of " + ", ".join(LOG_LEVELS) + ".",
                              metavar="LEVEL")
    log_format: str = _setting("json", _choice(*LOG_FORMATS), "json (one object a line) or text (key=value).",
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


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _flag(name: str) -> str:
    return "--snapshot-option" if name == "snapshot_options" else "--" + name.replace("_", "-")


def _env_var(name: str) -> str:
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
        unit = next(u for u in ("GiB", "MiB", "KiB") if value % _UNITS[u.lower()] == 0)
        return f"{value // _UNITS[unit.lower()]}{unit}"
    return str(value)


SETTINGS_TABLE: tuple[SettingInfo, ...] = tuple(
    SettingInfo(name=f.name, flag=_flag(f.name), env_var=_env_var(f.name), default=_shown_default(f),
                meaning=f.metadata["meaning"])
    for f in _FIELDS.values()
)


def render_settings_table() -> str:
    """The Markdown table of all settings that docs/configuration.md embeds."""
    lines = ["| setting | flag | environment variable | default | meaning |",
             "| --- | --- | --- | --- | --- |"]
    for row in SETTINGS_TABLE:
        lines.append(f"| `{row.name}` | `{row.flag}` | `{row.env_var}` | `{row.default}` | {row.meaning} |")
    return "\n".join(lines) + "\n"


# ---- loading ---------------------------------------------------------------------------------------

_Layer = dict[str, tuple[object, str]]  # setting name -> (raw value, where it came from)
_BAD = object()  # the parsed value of a setting whose raw value was invalid


def load_settings(*, flags: Mapping[str, object], environ: Mapping[str, str], config_file: Path | None,
                  require_data_dir: bool = True) -> Settings:
    """Merge flags > environment > config file > defaults, validate, and return the settings.

    ``flags`` maps setting names to values, None meaning "not given". An empty environment variable
    also counts as not given. Raises SettingsError listing every problem found.
    """
    unknown_flags = set(flags) - set(_FIELDS)
    if unknown_flags:
        raise TypeError(f"load_settings() got flags that are not settings: {', '.join(sorted(unknown_flags))}")
    problems: list[str] = []
    layers = [_from_file(config_file, problems) if config_file is not None else {},
              _from_environ(environ, problems),
              {name: (value, _flag(name)) for name, value in flags.items() if value is not None}]
    winners: _Layer = {}
    options: dict[str, str] = {}
    for layer in layers:  # lowest precedence first
        for name, (raw, origin) in layer.items():
            if name != "snapshot_options":
                winners[name] = (raw, origin)
            elif isinstance(parsed := _parse(name, raw, origin, problems), dict):
                options.update(parsed)
    # Only the winning value of a setting is parsed: a flag may override a bad environment value.
    values: dict[str, Any] = {name: _parse(name, *winners[name], problems) for name in _FIELDS if name in winners}
    origins = {name: origin for name, (_, origin) in winners.items()}
    values["snapshot_options"] = options
    _check_together(values, origins, problems, require_data_dir)
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def _parse(name: str, raw: object, origin: str, problems: list[str]) -> object:
    try:
        return _FIELDS[name].metadata["parse"](raw)
    except _Invalid as exc:
        problems.append(_problem(name, exc, raw, origin))
        return _BAD


def _problem(name: str, exc: _Invalid, raw: object, origin: str) -> str:
    shown = str(raw) if isinstance(raw, Path) else raw
    text = f"setting '{name}': {exc.expected}, got {shown!r} (from {origin})"
    return f"{text}: {exc.detail}" if exc.detail else text


def _from_file(path: Path, problems: list[str]) -> _Layer:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        problems.append(f"config file '{path}': cannot be read: {exc.strerror or exc}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file '{path}': not valid TOML: {exc}")
        return {}
    layer: _Layer = {}
    for key, value in document.items():
        if key in _FIELDS:
            layer[key] = (value, str(path))
        else:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            problems.append(f"unknown setting {key!r} in {path}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return layer


def _from_environ(environ: Mapping[str, str], problems: list[str]) -> _Layer:
    known = {_env_var(name): name for name in _FIELDS}
    layer: _Layer = {}
    for var, value in environ.items():
        if var in known:
            if value.strip():
                layer[known[var]] = (value, var)
        elif var.startswith(ENV_PREFIX) and var != CONFIG_ENV_VAR:
            # Other STATESERVER_* variables may belong to tools or tests; only a near miss of a
            # setting's name is surely a typo worth stopping for.
            close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX), [n.upper() for n in _FIELDS],
                                              n=1, cutoff=0.7)
            if close:
                problems.append(f"unknown environment variable {var}; did you mean '{ENV_PREFIX}{close[0]}'?")
    return layer


def _check_together(values: dict[str, object], origins: dict[str, str], problems: list[str],
                    require_data_dir: bool) -> None:
    """Checks that need more than one setting, or the file system; skipped where a value was bad."""
    def get(name: str) -> Any:
        value = values.get(name, _FIELDS[name].default)
        return None if value is _BAD else value

    def origin(name: str) -> str:
        return origins.get(name, "the default")

    data_dir = get("data_dir")
    if data_dir is not None:
        detail = _unwritable(data_dir)
        if detail:
            problems.append(_problem("data_dir", _Invalid("must be a directory the node can create and write to",
                                                          detail), data_dir, origin("data_dir")))
    elif values.get("data_dir") is not _BAD and require_data_dir:
        problems.append("setting 'data_dir': required; give --data-dir, STATESERVER_DATA_DIR "
                        "or data_dir in the config file")
    if get("snapshot_url") == "" and data_dir is not None:
        values["snapshot_url"] = (data_dir / "snapshots").as_uri()

    host, port = get("host"), get("port")
    if get("node_id") == "" and host is not None and port is not None:
        values["node_id"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    nodes, node_id = get("nodes"), get("node_id")
    nodes_file = get("nodes_file")
    if nodes and nodes_file is not None:
        problems.append(f"setting 'nodes_file': give either nodes (from {origin('nodes')}) or nodes_file "
                        f"(from {origin('nodes_file')}), not both")
    elif nodes_file is not None:
        try:
            read_nodes_file(nodes_file)
        except (OSError, ValueError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(_problem("nodes_file", _Invalid("must be a readable file of node entries", detail),
                                     nodes_file, origin("nodes_file")))
    # A dns: entry is resolved when the node starts, so membership can only be checked then.
    if nodes and node_id and node_id not in nodes and not any(node.startswith("dns:") for node in nodes):
        problems.append(f"setting 'node_id': must be one of the nodes ({', '.join(nodes)}) so that this node "
                        f"finds its own shards, got {node_id!r} (from {origin('node_id')})")

    metrics_port = get("metrics_port")
    workers = max(get("workers") or 1, 1)  # 0 (one per core) is checked once resolved, by the supervisor
    if metrics_port and port and port <= metrics_port < port + workers:
        taken = f"port {port}" if workers == 1 else f"the workers' ports {port}-{port + workers - 1}"
        problems.append(f"setting 'metrics_port': must differ from {taken}, got {metrics_port!r} "
                        f"(from {origin('metrics_port')})")
    if port and port + workers - 1 > 65535:
        problems.append(f"setting 'workers': worker i listens on port + i, so port {port} leaves room for "
                        f"{65536 - port} workers, got {workers!r} (from {origin('workers')})")
    key, value, message = get("max_key_bytes"), get("max_value_bytes"), get("max_message_bytes")
    if key and value and message and message <= key + value:
        problems.append(f"setting 'max_message_bytes': must exceed max_key_bytes + max_value_bytes ({key + value}) "
                        f"so that the largest allowed entry fits in one message, got {message!r} "
                        f"(from {origin('max_message_bytes')})")


def _unwritable(directory: Path) -> str:
    """Why the node could not use ``directory`` ('' if it can), creating it if missing."""
    if directory.exists() and not directory.is_dir():
        return "it exists and is not a directory"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".stateserver-write-test-"):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc}: '{exc.filename or directory}'"
    return ""


# ---- the command line --------------------------------------------------------------------------------

def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and one flag per setting, all defaulting to None ("not given")."""
    group = parser.add_argument_group(
        "settings", "flags override STATESERVER_* environment variables, which override the config file")
    group.add_argument("--config", dest="config_file", metavar="FILE", type=Path, default=None,
                       help=f"TOML config file; keys are the setting names (env {CONFIG_ENV_VAR})")
    for row in SETTINGS_TABLE:
        extra: dict[str, Any] = {"action": "append"} if row.name == "snapshot_options" else {}
        # argparse %-formats help strings, so escape any percent sign in the meaning.
        group.add_argument(row.flag, dest=row.name, default=None, metavar=_FIELDS[row.name].metadata["metavar"],
                           help=f"{row.meaning} (env {row.env_var})".replace("%", "%%"), **extra)


def settings_from_args(namespace: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings for a command whose parser went through ``add_settings_arguments``."""
    config_file = getattr(namespace, "config_file", None)
    if config_file is None and environ.get(CONFIG_ENV_VAR, "").strip():
        config_file = Path(environ[CONFIG_ENV_VAR].strip())
    flags = {name: getattr(namespace, name, None) for name in _FIELDS}
    return load_settings(flags=flags, environ=environ, config_file=config_file)


if __name__ == "__main__":
    print(render_settings_table(), end="")

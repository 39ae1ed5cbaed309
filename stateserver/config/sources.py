"""Where settings come from: command-line flags, ``STATESERVER_<SETTING>`` environment variables,
a TOML config file, the nodes file; merged, validated, and every problem reported at once."""
from __future__ import annotations

import argparse
import difflib
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stateserver.config.parsers import Invalid, parse_node_list
from stateserver.config.schema import ENV_PREFIX, FIELDS, SETTINGS_TABLE, Settings, SettingsError, env_var_for, flag_for

CONFIG_ENV_VAR = "STATESERVER_CONFIG"


def read_nodes_file(path: Path) -> tuple[str, ...]:
    """Entries of a nodes file: host:port or dns:NAME:PORT, one a line or comma-separated; # comments.
    Raises OSError (unreadable) or ValueError (a bad entry)."""
    text = path.read_text(encoding="utf-8")
    entries = [item.strip() for line in text.splitlines() for item in line.split("#", 1)[0].split(",")]
    return parse_node_list([entry for entry in entries if entry])


# ---- loading ---------------------------------------------------------------------------------------

_Layer = dict[str, tuple[object, str]]  # setting name -> (raw value, where it came from)
_BAD = object()  # the parsed value of a setting whose raw value was invalid


def load_settings(*, flags: Mapping[str, object], environ: Mapping[str, str], config_file: Path | None,
                  require_data_dir: bool = True) -> Settings:
    """Merge flags > environment > config file > defaults, validate, and return the settings.

    ``flags`` maps setting names to values, None meaning "not given". An empty environment variable
    also counts as not given. Raises SettingsError listing every problem found.
    """
    unknown_flags = set(flags) - set(FIELDS)
    if unknown_flags:
        raise TypeError(f"load_settings() got flags that are not settings: {', '.join(sorted(unknown_flags))}")
    problems: list[str] = []
    layers = [_from_file(config_file, problems) if config_file is not None else {},
              _from_environ(environ, problems),
              {name: (value, flag_for(name)) for name, value in flags.items() if value is not None}]
    winners: _Layer = {}
    options: dict[str, str] = {}
    for layer in layers:  # lowest precedence first
        for name, (raw, origin) in layer.items():
            if name != "snapshot_options":
                winners[name] = (raw, origin)
            elif isinstance(parsed := _parse(name, raw, origin, problems), dict):
                options.update(parsed)
    # Only the winning value of a setting is parsed: a flag may override a bad environment value.
    values: dict[str, Any] = {name: _parse(name, *winners[name], problems) for name in FIELDS if name in winners}
    origins = {name: origin for name, (_, origin) in winners.items()}
    values["snapshot_options"] = options
    _check_together(values, origins, problems, require_data_dir)
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def _parse(name: str, raw: object, origin: str, problems: list[str]) -> object:
    try:
        return FIELDS[name].metadata["parse"](raw)
    except Invalid as exc:
        problems.append(_problem(name, exc, raw, origin))
        return _BAD


def _problem(name: str, exc: Invalid, raw: object, origin: str) -> str:
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
        if key in FIELDS:
            layer[key] = (value, str(path))
        else:
            close = difflib.get_close_matches(key, list(FIELDS), n=1)
            problems.append(f"unknown setting {key!r} in {path}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return layer


def _from_environ(environ: Mapping[str, str], problems: list[str]) -> _Layer:
    known = {env_var_for(name): name for name in FIELDS}
    layer: _Layer = {}
    for var, value in environ.items():
        if var in known:
            if value.strip():
                layer[known[var]] = (value, var)
        elif var.startswith(ENV_PREFIX) and var != CONFIG_ENV_VAR:
            # Other STATESERVER_* variables may belong to tools or tests; only a near miss of a
            # setting's name is surely a typo worth stopping for.
            close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX), [n.upper() for n in FIELDS],
                                              n=1, cutoff=0.7)
            if close:
                problems.append(f"unknown environment variable {var}; did you mean '{ENV_PREFIX}{close[0]}'?")
    return layer


def _check_together(values: dict[str, object], origins: dict[str, str], problems: list[str],
                    require_data_dir: bool) -> None:
    """Checks that need more than one setting, or the file system; skipped where a value was bad."""
    def get(name: str) -> Any:
        value = values.get(name, FIELDS[name].default)
        return None if value is _BAD else value

    def origin(name: str) -> str:
        return origins.get(name, "the default")

    data_dir = get("data_dir")
    if data_dir is not None:
        detail = _unwritable(data_dir)
        if detail:
            problems.append(_problem("data_dir", Invalid("must be a directory the node can create and write to",
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
            problems.append(_problem("nodes_file", Invalid("must be a readable file of node entries", detail),
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
        group.add_argument(row.flag, dest=row.name, default=None, metavar=FIELDS[row.name].metadata["metavar"],
                           help=f"{row.meaning} (env {row.env_var})".replace("%", "%%"), **extra)


def settings_from_args(namespace: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings for a command whose parser went through ``add_settings_arguments``."""
    config_file = getattr(namespace, "config_file", None)
    if config_file is None and environ.get(CONFIG_ENV_VAR, "").strip():
        config_file = Path(environ[CONFIG_ENV_VAR].strip())
    flags = {name: getattr(namespace, name, None) for name in FIELDS}
    return load_settings(flags=flags, environ=environ, config_file=config_file)

"""Parsers of setting values: a raw value from a flag, the environment (a string) or TOML (typed)
in, the value out, or ``Invalid`` saying what a valid value looks like."""
from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SNAPSHOT_SCHEMES = ("file", "s3", "gs", "az", "memory")


class Invalid(Exception):
    """Raised by a parser: ``expected`` says what a valid value looks like."""

    def __init__(self, expected: str, detail: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.detail = detail


Parser = Callable[[object], object]


def _as_str(raw: object) -> str:
    if isinstance(raw, Path):
        return str(raw)
    if not isinstance(raw, str):
        raise Invalid("must be a string")
    return raw.strip()


def _as_int(raw: object, expected: str) -> int:
    if isinstance(raw, bool):  # bool is an int subclass; 'port = true' is a mistake, not 1
        raise Invalid(expected)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip(), 10)
        except ValueError:
            pass
    raise Invalid(expected)


def parse_port(lowest: int) -> Parser:
    expected = f"must be an integer from {lowest} to 65535"

    def parse(raw: object) -> int:
        value = _as_int(raw, expected)
        if not lowest <= value <= 65535:
            raise Invalid(expected)
        return value
    return parse


def parse_count(lowest: int) -> Parser:
    expected = f"must be an integer of at least {lowest}"

    def parse(raw: object) -> int:
        value = _as_int(raw, expected)
        if value < lowest:
            raise Invalid(expected)
        return value
    return parse


_SIZE = re.compile(r"(\d+(?:_\d+)*)\s*(KiB|MiB|GiB)?", re.IGNORECASE)
UNITS = {"": 1, "kib": KiB, "mib": MiB, "gib": GiB}


def parse_size(highest: int | None = None) -> Parser:
    expected = "must be a positive number of bytes, or a size such as 512KiB, 64MiB or 2GiB"
    if highest is not None:
        expected += f", at most {highest}"

    def parse(raw: object) -> int:
        if isinstance(raw, str) and (match := _SIZE.fullmatch(raw.strip())):
            value = int(match[1]) * UNITS[(match[2] or "").lower()]
        else:
            value = _as_int(raw, expected)
        if value < 1 or (highest is not None and value > highest):
            raise Invalid(expected)
        return value
    return parse


def parse_seconds(raw: object) -> float:
    expected = "must be a number of seconds, 0 or more"
    if isinstance(raw, bool):
        raise Invalid(expected)
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if not 0 <= value < float("inf"):
        raise Invalid(expected)
    return value


def parse_choice(*names: str) -> Parser:
    expected = "must be one of " + ", ".join(names)

    def parse(raw: object) -> str:
        value = _as_str(raw).lower()
        if value not in names:
            raise Invalid(expected)
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


def parse_host(raw: object) -> str:
    value = _as_str(raw)
    if not _is_host(value):
        raise Invalid("must be an IP address or a host name, such as 127.0.0.1, 0.0.0.0, :: or node-1")
    return value.removeprefix("[").removesuffix("]")


def _address(text: str) -> str:
    host, colon, port = text.rpartition(":")
    try:
        if not colon or not _is_host(host) or (":" in host and not host.startswith("[")):
            raise Invalid("")
        parse_port(1)(port)
    except Invalid:
        raise Invalid("must be host:port, such as node-1:7700 or [::1]:7700") from None
    return text


def parse_node_id(raw: object) -> str:
    value = _as_str(raw)
    return _address(value) if value else ""


def _node_entry(text: str) -> str:
    """host:port, or dns:NAME:PORT: every address behind a name, as a Kubernetes headless service gives."""
    if text.startswith("dns:"):
        try:
            _address(text.removeprefix("dns:"))
        except Invalid:
            raise Invalid("must be dns:NAME:PORT, such as dns:stateserver:7700") from None
        return text
    return _address(text)


def parse_nodes(raw: object) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise Invalid("must be a list of host:port addresses (comma-separated in flags and the environment)")
    nodes = tuple(_node_entry(_as_str(item)) for item in items if not isinstance(item, str) or item.strip())
    twice = sorted({node for node in nodes if nodes.count(node) > 1})
    if twice:
        raise Invalid(f"must list each node once ({', '.join(twice)} appear more than once)")
    return nodes


def parse_node_list(raw: object) -> tuple[str, ...]:
    """A node list (host:port and dns:NAME:PORT entries), as the ``nodes`` setting takes it; ValueError if bad."""
    try:
        return parse_nodes(raw)
    except Invalid as exc:
        raise ValueError(f"the node list {exc.expected}, got {raw!r}") from None




def parse_optional_address(raw: object) -> str:
    value = _as_str(raw)
    return _address(value) if value else ""


def parse_file(raw: object) -> Path:
    text = _as_str(raw)
    if not text or "\x00" in text:
        raise Invalid("must be a file path")
    return Path(text).expanduser().absolute()


def parse_path(raw: object) -> Path:
    text = _as_str(raw)
    if not text or "\x00" in text:
        raise Invalid("must be a directory path")
    return Path(text).expanduser().absolute()


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_GS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_AZ_CONTAINER = re.compile(r"[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])?")


def parse_snapshot_url(raw: object) -> str:
    text = _as_str(raw)
    if not text:
        return ""  # resolved to file://<data_dir>/snapshots at load
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in SNAPSHOT_SCHEMES or "://" not in text:
        raise Invalid("must be a URL starting with " + ", ".join(f"{s}://" for s in SNAPSHOT_SCHEMES))
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise Invalid("must not carry a query, fragment or credentials; put them in snapshot_options")
    if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
        raise Invalid("must be an absolute file URL, such as file:///var/lib/stateserver/snapshots")
    bucket_rules = {"s3": (_S3_BUCKET, "bucket"), "gs": (_GS_BUCKET, "bucket"), "az": (_AZ_CONTAINER, "container")}
    if parts.scheme in bucket_rules:
        rule, what = bucket_rules[parts.scheme]
        if not rule.fullmatch(parts.netloc) or ".." in parts.netloc:
            raise Invalid(f"must name a valid {what}, such as {parts.scheme}://my-{what}/prefix")
    if parts.scheme == "memory" and parts.path.strip("/"):
        raise Invalid("must be memory:// or memory://name")
    return text


_OPTION_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def parse_options(raw: object) -> dict[str, str]:
    expected = "must be KEY=VALUE pairs (comma-separated in the environment) or a TOML table of strings"
    if isinstance(raw, str):
        raw = [pair for pair in raw.split(",") if pair.strip()]
    if isinstance(raw, (list, tuple)):
        pairs = [str(pair).partition("=") for pair in raw]
        if not all(eq for _, eq, _ in pairs):
            raise Invalid(expected)
        raw = {key.strip(): value.strip() for key, _, value in pairs}
    if not isinstance(raw, Mapping):
        raise Invalid(expected)
    options: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key) or isinstance(value, (dict, list)):
            raise Invalid(expected)
        # TOML gives numbers and booleans their own types; the object store wants strings.
        options[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return options

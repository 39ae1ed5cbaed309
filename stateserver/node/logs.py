"""Structured logs on the stdlib ``logging`` module: one line per event, JSON or key=value text.

Code logs as usual and passes context as ``extra``; every extra field becomes a field of the line::

    log.info("shard opened", extra={"namespace": ns, "shard": shard_id})

    {"ts":"2025-01-31T12:00:00.123Z","level":"info","logger":"stateserver.shard.shard","event":"shard opened","namespace":"jobs","shard":3}
    ts=2025-01-31T12:00:00.123Z level=info logger=stateserver.shard.shard event="shard opened" namespace=jobs shard=3

A traceback travels inside the line (field ``exc``) so that log shippers never split an event.
"""
from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import TextIO

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_FORMATS = ("json", "text")

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
_CORE_FIELDS = ("ts", "level", "logger", "event")
_BARE_TEXT = re.compile(r"[^\s\"=\\]+")


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, object]:
    created = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
    fields: dict[str, object] = {
        "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage().rstrip("\n"),
    }
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES:
            # An extra named like a core field must not overwrite it (a 'level' extra would lie).
            fields["extra_" + key if key in _CORE_FIELDS else key] = value
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    if record.stack_info:
        fields["stack"] = formatter.formatStack(record.stack_info)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot hold are written with ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``key=value`` pairs on one line; values with spaces, quotes or newlines are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_text_value(value)}" for key, value in _fields(record, self).items())


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return value if _BARE_TEXT.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, (bool, int, float, list, tuple, dict)):
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    return _text_value(str(value))


def configure_logging(level: str, fmt: str, *, stream: TextIO | None = None) -> logging.Handler:
    """Send all logging to ``stream`` (stderr by default) as one line per event, in ``fmt``
    ("json" or "text"), at ``level`` (debug, info, warning, error) and above.

    Calling it again replaces the handler it installed before; handlers others installed (such as
    pytest's log capture) stay. Returns the installed handler.
    """
    if level.lower() not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    if fmt.lower() not in _FORMATS:
        raise ValueError(f"log format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_stateserver", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else TextFormatter())
    handler._stateserver = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_LEVELS[level.lower()])
    # Python warnings (deprecations from dependencies) then come out as log lines too.
    logging.captureWarnings(True)
    return handler

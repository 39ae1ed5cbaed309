"""Structured logs: one line per event, with the fields that tools and people search by."""
from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from stateserver.node.logs import configure_logging

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def capture(level: str, fmt: str) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_line_has_core_and_extra_fields() -> None:
    stream = capture("info", "json")
    logging.getLogger("stateserver.shard.shard").info("shard %s opened", "jobs/3",
                                                 extra={"namespace": "jobs", "shard": 3, "path": Path("/d")})
    [line] = lines(stream)
    event = json.loads(line)
    assert TS.fullmatch(event.pop("ts"))
    assert event == {"level": "info", "logger": "stateserver.shard.shard", "event": "shard jobs/3 opened",
                     "namespace": "jobs", "shard": 3, "path": "/d"}
    assert list(json.loads(line))[:4] == ["ts", "level", "logger", "event"]


def test_text_line_is_key_value_pairs_quoted_when_needed() -> None:
    stream = capture("debug", "text")
    logging.getLogger("stateserver.ckpt").debug(
        "checkpoint uploaded", extra={"namespace": "jobs", "checkpoint": 7, "note": 'a "b"=c', "empty": "",
                                      "ok": True, "missing": None})
    [line] = lines(stream)
    assert re.fullmatch(
        r'ts=\S+ level=debug logger=stateserver\.ckpt event="checkpoint uploaded" namespace=jobs checkpoint=7 '
        r'note="a \\"b\\"=c" empty="" ok=true missing=null', line), line


def test_level_filters_events() -> None:
    stream = capture("WARNING", "json")
    log = logging.getLogger("stateserver.test")
    log.info("hidden")
    log.warning("shown")
    log.error("also shown")
    assert [json.loads(line)["level"] for line in lines(stream)] == ["warning", "error"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_traceback_stays_on_one_line(fmt: str) -> None:
    stream = capture("info", fmt)
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        logging.getLogger("stateserver.test").exception("upload failed\n", extra={"shard": 1})
    [line] = lines(stream)
    if fmt == "json":
        event = json.loads(line)
        assert event["event"] == "upload failed" and event["shard"] == 1
        assert event["exc"].startswith("Traceback") and event["exc"].endswith("RuntimeError: disk on fire")
    else:
        assert 'event="upload failed"' in line and "exc=\"Traceback" in line and "disk on fire" in line


def test_extra_cannot_overwrite_a_core_field() -> None:
    stream = capture("info", "json")
    logging.getLogger("stateserver.test").info("x", extra={"level": "fake", "event": "other"})
    event = json.loads(lines(stream)[0])
    assert (event["level"], event["event"], event["extra_level"], event["extra_event"]) == (
        "info", "x", "fake", "other")


def test_reconfiguring_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    first = capture("info", "json")
    second = capture("info", "text")
    assert len(root.handlers) == before + 1
    logging.getLogger("stateserver.test").info("once")
    assert lines(first) == [] and len(lines(second)) == 1


def test_warnings_become_log_lines() -> None:
    with warnings.catch_warnings():  # undo pytest's own recording of warnings, and ours, afterwards
        warnings.simplefilter("always")
        stream = capture("info", "json")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    [line] = lines(stream)
    event = json.loads(line)
    assert event["logger"] == "py.warnings" and "DeprecationWarning: old API" in event["event"]


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "xml")])
def test_bad_arguments_are_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        configure_logging(level, fmt)

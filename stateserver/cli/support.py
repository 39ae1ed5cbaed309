"""What the CLI's commands share: snapshot-store arguments, argument types, and the guard that
turns every expected failure into one line on stderr and an exit code (no traceback).

Exit status: 0 done; 1 failed (missing or damaged checkpoint or object, the store refused or was
unreachable); 2 the command line or the store URL is wrong.
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import re
import sys
import urllib.parse
from collections.abc import Callable

from stateserver.protocol.errors import InvalidInput, StateServerError
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.names import check_name
from stateserver.store import InvalidStoreUrl, ObjectStore, RetryingObjectStore, StoreError, open_store

EXIT_FAILED = 1
EXIT_USAGE = 2
Command = Callable[[argparse.Namespace], int]


class Refused(Exception):
    """A command declines to go on; the message says why and ends the command with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- arguments ---------------------------------------------------------------------------------------


def store_arguments() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("snapshot store")
    group.add_argument("--snapshot-url", required=True, metavar="URL",
                       help="file:///abs/path or s3://bucket[/prefix]")
    group.add_argument("--snapshot-option", action="append", default=[], type=store_option, metavar="KEY=VALUE",
                       dest="snapshot_options", help="a store option such as endpoint=... or region=... (repeatable)")
    group.add_argument("--namespace", required=True, type=namespace_name, metavar="NS")
    return common


def checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=checkpoint_id, metavar="N|latest",
                        help="a checkpoint id, or latest")


def checkpoint_id(text: str) -> int | str:
    if text == "latest":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a checkpoint id (1, 2, ...) or latest, got {text!r}")


def namespace_name(text: str) -> str:
    try:
        return check_name("namespace", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def store_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def key_group_range(text: str) -> KeyGroupRange:
    try:
        return KeyGroupRange.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> datetime.timedelta:
    """``90s``, ``30m``, ``1h30m``, ``2d``, or plain seconds."""
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return datetime.timedelta(seconds=float(text))
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 1h or 2d, got {text!r}")
    return datetime.timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


# -- errors ------------------------------------------------------------------------------------------


DEBUG_VARIABLE = "STATESERVER_DEBUG"


def guarded(command: Command) -> Command:
    """Run ``command``, turning every expected failure into one line on stderr and an exit code."""

    def run(options: argparse.Namespace) -> int:
        try:
            return command(options)
        except Refused as exc:
            return fail(str(exc), exc.code)
        except InvalidStoreUrl as exc:
            return fail(str(exc), EXIT_USAGE)
        except InvalidInput as exc:
            return fail(str(exc), EXIT_USAGE)
        except (StoreError, StateServerError) as exc:  # access denied and unreachable say what to check
            return fail(str(exc))
        except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED
        except OSError as exc:  # the local disk: a data directory that cannot be written, ...
            return fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except KeyboardInterrupt:
            return fail("interrupted", 130)
        except Exception as exc:  # a bug, or an error no layer below translated: still one line
            if os.environ.get(DEBUG_VARIABLE):
                raise
            return fail(f"unexpected {type(exc).__name__}: {exc} (a bug worth reporting; set "
                        f"{DEBUG_VARIABLE}=1 to see the traceback)")

    return run


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"stateserver: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def open_snapshot_store(options: argparse.Namespace) -> ObjectStore:
    url: str = options.snapshot_url
    if url.startswith("file:"):
        # open_store creates a missing directory, which would hide a mistyped path behind
        # "no checkpoint"; a store we only read from must already exist.
        path = pathlib.Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        if url.startswith("file:///") and not path.is_dir():
            raise Refused(f"no snapshot store at {url}: {path} is not a directory")
    return RetryingObjectStore(open_store(url, options=dict(options.snapshot_options) or None))


# -- output ------------------------------------------------------------------------------------------


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_millis(millis: int) -> str:
    moment = datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"

"""Every CLI command runs behind one guard: expected failures and bugs alike end as one line on
stderr and a non-zero exit, without a traceback unless STATESERVER_DEBUG asks for it."""
from __future__ import annotations

import argparse

import pytest

from stateserver.cli.support import DEBUG_VARIABLE, EXIT_FAILED, EXIT_USAGE, Command, Refused, guarded
from stateserver.protocol.errors import InvalidInput


def raising(error: BaseException) -> Command:
    def command(options: argparse.Namespace) -> int:
        raise error

    return guarded(command)


@pytest.mark.parametrize(("error", "code", "words"), [
    (Refused("no snapshot store at file:///x"), EXIT_FAILED, "no snapshot store"),
    (InvalidInput("key groups 9-2 are not a range"), EXIT_USAGE, "9-2"),
    (PermissionError(13, "Permission denied", "/data"), EXIT_FAILED, "Permission denied: /data"),
    (RuntimeError("Corruption: block checksum mismatch in 000012.sst"), EXIT_FAILED,
     "unexpected RuntimeError: Corruption: block checksum mismatch in 000012.sst"),
])
def test_one_line_and_an_exit_code(error: BaseException, code: int, words: str, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    assert raising(error)(argparse.Namespace()) == code
    err = capsys.readouterr().err
    assert err.startswith("stateserver: error: ") and words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_variable_shows_the_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    with pytest.raises(RuntimeError, match="a bug"):
        raising(RuntimeError("a bug"))(argparse.Namespace())

"""Making a change of a local directory durable: the one place that fsyncs a directory.

A rename, link or new file is on disk only once its directory is synced; the file's own fsync
makes its bytes durable, not its name (DESIGN.md invariant 10).
"""
from __future__ import annotations

import os
import pathlib


def sync_directory(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

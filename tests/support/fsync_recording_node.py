"""A real node that records every ``os.fsync`` it makes under one directory, for durability tests.

Run as a module, it wraps ``os.fsync`` and then runs ``stateserver serve`` as usual:

    FSYNC_LOG=/tmp/log FSYNC_UNDER=/tmp/store python -m support.fsync_recording_node serve ...

Each fsync of a file or directory under ``FSYNC_UNDER`` appends one line ``file<TAB>path`` or
``dir<TAB>path`` to ``FSYNC_LOG``, in the order the calls were made, before the call itself (a
crash right after would count it: the test reads the log only after the node answered). RocksDB's
own syncs are made in C++ and do not pass through ``os.fsync``; nothing in stateserver knows.

``start_fsync_recording_node`` (in the test process) starts one, as ``support.node.start_node`` does.
"""
from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

from support.node import NodeProcess, free_loopback_port, launch_wrapped_node, wait_serving

LOG_ENV = "FSYNC_LOG"
UNDER_ENV = "FSYNC_UNDER"


def start_fsync_recording_node(data_dir: Path, *, snapshot_url: str, under: Path, log: Path) -> NodeProcess:
    """A node on a free loopback port, serving, recording its fsyncs under ``under`` into ``log``."""
    port = free_loopback_port()
    log_path = data_dir.parent / f"{data_dir.name}-fsync-node-{port}.log"
    environment = {LOG_ENV: str(log), UNDER_ENV: str(under.resolve())}
    return wait_serving(launch_wrapped_node("support.fsync_recording_node", data_dir, port=port, log_path=log_path,
                                            args=["--snapshot-url", snapshot_url], environment=environment))


def read_fsync_log(log: Path) -> list[tuple[str, Path]]:
    """The recorded fsyncs in call order: ("file" or "dir", path)."""
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().splitlines():
        kind, path = line.split("\t", 1)
        entries.append((kind, Path(path)))
    return entries


def _install_recorder(log: Path, under: str) -> None:
    original = os.fsync
    lock = threading.Lock()
    out = open(log, "a", buffering=1)  # noqa: SIM115  # open for the life of the process

    def fsync(fd: int) -> None:  # type: ignore[override]
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path == under or path.startswith(under + os.sep):
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            with lock:
                out.write(f"{kind}\t{path}\n")
        original(fd)

    os.fsync = fsync  # type: ignore[assignment]


def main() -> int:
    _install_recorder(Path(os.environ[LOG_ENV]), os.environ[UNDER_ENV])
    from stateserver.cli.main import main as stateserver_main

    return stateserver_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

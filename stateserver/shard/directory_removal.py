"""Directories removed in the background, one at a time, off the path of the request that
discarded them: a failover replaces tens of shard directories at once, and removing them on
the opens' threads (or on a thread each) competes with the opens for the CPU and the GIL.

The caller renames a directory to a hidden name first, so nothing finds it half removed; what a
crash leaves is swept at the next start (``registry.sweep_leftovers``, ``LocalCopies``).
"""
from __future__ import annotations

import pathlib
import queue
import shutil
import threading
import uuid

_pending: queue.SimpleQueue[pathlib.Path] = queue.SimpleQueue()
_started = threading.Lock()
_worker: threading.Thread | None = None


def remove_later(path: pathlib.Path) -> None:
    global _worker
    _pending.put(path)
    with _started:
        if _worker is None:
            _worker = threading.Thread(target=_remove_forever, name="remove-dirs", daemon=True)
            _worker.start()


def discard_later(path: pathlib.Path) -> bool:
    """Move a shard directory aside (``.<name>.replaced-*``, swept at start) and remove it in the
    background; False if it was gone already (another open took or discarded it meanwhile)."""
    discarded = path.parent / f".{path.name}.replaced-{uuid.uuid4().hex[:8]}"
    try:
        path.rename(discarded)
    except FileNotFoundError:
        return False
    remove_later(discarded)
    return True


def _remove_forever() -> None:
    while True:
        shutil.rmtree(_pending.get(), ignore_errors=True)

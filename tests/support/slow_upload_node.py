"""A real node whose snapshot uploads stall from a given checkpoint on, for crash tests.

Run as a module, it wraps the object store's file upload, then runs ``stateserver serve`` as usual:

    python -m support.slow_upload_node serve --data-dir D --snapshot-url URL ...

Uploads of objects whose key names checkpoint ``STALL_FROM_CHECKPOINT`` or a later one go through
for the first ``STALL_AFTER_UPLOADS`` of them; every later one blocks for good. So a snapshot of
such a checkpoint lands part of its files and never finishes, however fast the store is: the test
sees objects of it in the store and kills the node while its upload is certainly in progress.
Nothing in stateserver knows of this; the wrapper goes around ``RetryingObjectStore``, which the
node puts in front of every store it opens.

``start_slow_upload_node`` (in the test process) starts one, as ``support.node.start_node`` does.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from stateserver.store import paths
from stateserver.store import RetryingObjectStore
from support.node import NodeProcess, free_loopback_port, launch_wrapped_node, wait_serving

STALL_FROM_ENV = "STALL_FROM_CHECKPOINT"
STALL_AFTER_ENV = "STALL_AFTER_UPLOADS"


def start_slow_upload_node(data_dir: Path, *, snapshot_url: str, stall_from_checkpoint: int,
                           uploads_before_stall: int, max_message_bytes: int = 64 << 20) -> NodeProcess:
    """A node on a free loopback port, serving, whose uploads stall as the module docstring says."""
    port = free_loopback_port()
    log_path = data_dir.parent / f"{data_dir.name}-slow-upload-node-{port}.log"
    environment = {STALL_FROM_ENV: str(stall_from_checkpoint), STALL_AFTER_ENV: str(uploads_before_stall)}
    return wait_serving(launch_wrapped_node("support.slow_upload_node", data_dir, port=port, log_path=log_path,
                                            args=["--snapshot-url", snapshot_url], environment=environment,
                                            max_message_bytes=max_message_bytes))


def _install_stall(stall_from_checkpoint: int, uploads_before_stall: int) -> None:
    original = RetryingObjectStore.put_file
    lock = threading.Lock()
    passed = 0
    never = threading.Event()

    def put_file(self: RetryingObjectStore, key: str, local_path: str | os.PathLike[str]) -> int:
        nonlocal passed
        checkpoint_id = paths.checkpoint_id_of(key)
        if checkpoint_id is not None and checkpoint_id >= stall_from_checkpoint:
            with lock:
                stall = passed >= uploads_before_stall
                passed += 0 if stall else 1
            if stall:
                print(f"slow_upload_node: stalling the upload of {key}", file=sys.stderr, flush=True)
                never.wait()
        return original(self, key, local_path)

    RetryingObjectStore.put_file = put_file  # type: ignore[method-assign]


def main() -> int:
    _install_stall(int(os.environ[STALL_FROM_ENV]), int(os.environ[STALL_AFTER_ENV]))
    from stateserver.cli.main import main as stateserver_main

    return stateserver_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

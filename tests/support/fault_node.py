"""A real node whose object store misbehaves on request: errors, timeouts, lost answers, slow calls.

Run as a module, it puts ``support.fault_store.FaultInjectingStore`` around the store that
``open_store`` returns (so under the node's ``RetryingObjectStore``, which retries what it
injects as it would a flaky network), then runs ``stateserver serve`` as usual:

    FAULT_STORE_CONTROL=/tmp/x/control.json python -m support.fault_node serve --data-dir D ...

The control file (``support.fault_store.write_control``) says which faults to inject; without it
the node behaves normally. With ``FAULT_POWER_LOG`` and ``FAULT_POWER_ROOT`` set (a ``file://``
store at that root), the node also logs its writes, renames and fsyncs there, so that a test can
simulate a power loss of it (``support.power_loss``). Nothing in stateserver knows of this.

``launch_fault_node`` starts one in the background from the calling thread (the kernel SIGKILLs
the node when that thread ends, so call it from a thread that lives as long as the node);
``support.node.wait_serving`` waits until it answers, so several nodes start at once.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from support.node import NodeProcess, launch_wrapped_node

CONTROL_ENV = "FAULT_STORE_CONTROL"
# support.power_loss reads these in the node; they are spelled here too so that the launcher
# imports nothing of the node (the client's tests launch fault nodes from a client-only install).
POWER_LOG_ENV = "FAULT_POWER_LOG"
POWER_ROOT_ENV = "FAULT_POWER_ROOT"


def launch_fault_node(data_dir: Path, *, port: int, control_path: Path, extra_args: Sequence[str] = (),
                      max_message_bytes: int = 64 << 20, log_label: str = "",
                      power_log: tuple[Path, Path] | None = None) -> NodeProcess:
    """Start the node process (not yet waiting for it to serve). ``power_log``: (log, store root)
    to record its writes and fsyncs on a ``file://`` store for ``support.power_loss``."""
    log_path = data_dir.parent / f"{data_dir.name}-fault-node{log_label}.log"
    power = {POWER_LOG_ENV: str(power_log[0]), POWER_ROOT_ENV: str(power_log[1])} if power_log else {}
    return launch_wrapped_node("support.fault_node", data_dir, port=port, log_path=log_path, args=extra_args,
                               environment={CONTROL_ENV: str(control_path), **power},
                               max_message_bytes=max_message_bytes, append_log=True)


def _install(control_path: Path) -> None:
    # Imported here, in the node process: the launcher above must not need the node's packages.
    import stateserver.node.server as server
    from support import power_loss
    from support.fault_store import FaultInjectingStore

    original = server.open_store
    recording = POWER_LOG_ENV in os.environ
    if recording:
        power_loss.install_recorder(Path(os.environ[POWER_LOG_ENV]), Path(os.environ[POWER_ROOT_ENV]))

    def open_faulty_store(url: str, **kwargs: object) -> FaultInjectingStore:
        store = original(url, **kwargs)  # type: ignore[arg-type]
        if recording:  # under the injected faults: only writes that reach the store are logged
            store = power_loss.RecordingStore(store)  # type: ignore[assignment]
        return FaultInjectingStore(store, control_path)

    server.open_store = open_faulty_store  # type: ignore[assignment]


def main() -> int:
    _install(Path(os.environ[CONTROL_ENV]))
    from stateserver.cli.main import main as stateserver_main

    return stateserver_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

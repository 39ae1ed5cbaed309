"""SIGTERM during a write load: the node drains and exits 0, and after a restart on the same data
directory it holds every write whose flush the client saw return, closed cleanly."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from stateserver.client import BYTES, RestoreRequiredError, StateClient, Writer
from lifecycle_node import serve
from support.shard_dirs import clean_close_records, stored_values

WRITERS = 4  # one shard each, so that batches are in flight most of the time
ROUND_KEYS = 2000
LOAD_SECONDS = 1.5


class WriteLoad(threading.Thread):
    """Puts rounds of keys over all shards; after each flush returns, the round is acknowledged."""

    def __init__(self, address: str, namespace: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.namespace = namespace
        self.acknowledged: dict[str, bytes] = {}
        self.rounds = 0
        self.error: BaseException | None = None
        self.writer: Writer | None = None

    def run(self) -> None:
        try:
            with StateClient(self.address, batch_ops=500, timeout=20) as client:
                client.create_namespace(self.namespace, max_key_groups=128)
                writer = self.writer = client.open_writer(self.namespace, key_groups="0-127", epoch=1)
                state = writer.value_state("v", value_serializer=BYTES)
                while True:
                    batch = {f"r{self.rounds}-k{i}": f"{self.rounds}:{i}".encode() * 4 for i in range(ROUND_KEYS)}
                    state.put_many(batch)
                    writer.flush()
                    self.acknowledged.update(batch)
                    self.rounds += 1
        except Exception as exc:  # the node went away: the end of the load
            self.error = exc


def test_acknowledged_writes_survive_sigterm_and_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = serve(data_dir)
    loads = [WriteLoad(node.address, f"drain-{i}") for i in range(WRITERS)]
    for load in loads:
        load.start()
    started = time.monotonic()
    while min(load.rounds for load in loads) < 2 or time.monotonic() - started < LOAD_SECONDS:
        for load in loads:
            assert load.is_alive() and time.monotonic() - started < 20, f"the load stopped early: {load.error!r}"
        time.sleep(0.05)

    os.kill(node.process.pid, signal.SIGTERM)
    assert node.process.wait(30) == 0, "\n".join(node.log_lines()[-20:])
    for load in loads:
        load.join(30)
        assert not load.is_alive() and load.error is not None, "the load should fail once the node is gone"

    events = [json.loads(line) for line in node.log_lines() if line.startswith("{")]
    names = [event["event"] for event in events]
    assert names.index("signal received") < names.index("draining") < names.index("node stopped")
    closed = {(event["namespace"], event["shard"]) for event in events if event["event"] == "shard closed"}
    assert closed == {(load.namespace, f"{load.namespace}/0-127") for load in loads}
    assert not [line for line in node.log_lines() if "Traceback" in line]

    # Every acknowledged write was flushed by the stop, and every shard was closed cleanly.
    for load in loads:
        acknowledged = {key.encode(): value for key, value in load.acknowledged.items()}
        assert len(acknowledged) >= 2 * ROUND_KEYS
        stored = stored_values(data_dir, load.namespace, "v")
        assert {key: stored.get(key) for key in acknowledged} == acknowledged, load.namespace
        assert all(record is not None and record.epoch == 1 for record in clean_close_records(data_dir, load.namespace))

    restarted = serve(data_dir)
    try:
        with StateClient(restarted.address) as client:
            for load in loads:
                assert load.writer is not None
                # Its last batch was cut by the stop, so the writer's session failed (invariant 9):
                # it comes back from a checkpoint, not by resuming the copy.
                with pytest.raises(RestoreRequiredError):
                    client.reopen(load.writer)
    finally:
        assert restarted.terminate() == 0

"""Node.stop() with a write batch in flight, on a node in this process whose batches are slowed down.

gRPC's ``stop(grace)`` refuses new calls at once and cancels calls still running at the end of
the grace period, but the handler threads go on: the shard must close only after they return.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stateserver.client import BYTES, RestoreRequiredError, StateClient, StateServerError
from stateserver.shard import stored_batches
from stateserver.shard import writes as shard_writes
from stateserver.node.server import Node, NodeConfig, NodeStartError
from support.shard_dirs import stored_values

APPLY_SECONDS = 1.0


@pytest.fixture
def slow_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[bool]]]:
    """Every write batch waits APPLY_SECONDS before it is applied; then says whether its shard was closed."""
    entered = threading.Event()
    closed_after_apply: list[bool] = []
    apply = shard_writes.apply_write_batch

    def slow_apply(shard: Any, batch: Any, **options: Any) -> int:
        entered.set()
        time.sleep(APPLY_SECONDS)
        applied = apply(shard, batch, **options)
        closed_after_apply.append(shard.closed)
        return applied

    apply_stored = stored_batches.apply_stored_write_batch

    def slow_apply_stored(shard: Any, batch: Any, *blobs: Any, **options: Any) -> int:
        entered.set()
        time.sleep(APPLY_SECONDS)
        applied = apply_stored(shard, batch, *blobs, **options)
        closed_after_apply.append(shard.closed)
        return applied

    monkeypatch.setattr(shard_writes, "apply_write_batch", slow_apply)
    # The client sends stored-form batches to a node that takes them: slowed down alike.
    monkeypatch.setattr(stored_batches, "apply_stored_write_batch", slow_apply_stored)
    yield entered, closed_after_apply


def start_node(data_dir: Path, drain_seconds: float) -> Node:
    node = Node(NodeConfig(host="127.0.0.1", port=0, data_dir=data_dir, drain_seconds=drain_seconds))
    node.start()
    return node


def refused_during_the_stop(address: str, stopping: threading.Thread) -> grpc.RpcError:
    """The error of the first new call refused while the stop runs (it runs until the batch in
    flight returns, about APPLY_SECONDS). Asked again until then, not once after a fixed sleep:
    on a busy machine the stop may not have begun 0.1 s after its thread started."""
    channel = grpc.insecure_channel(address)
    try:
        while stopping.is_alive():
            try:
                channel.unary_unary("/stateserver.v1.StateService/NodeInfo")(b"", timeout=5)
            except grpc.RpcError as exc:
                assert stopping.is_alive(), "no call was refused before the stop ended"
                return exc
            time.sleep(0.01)
    finally:
        channel.close()
    raise AssertionError("no new call was refused while the node stopped")


@pytest.mark.parametrize("drain_seconds", [3.0, 0.2], ids=["within-grace", "outlives-grace"])
def test_stop_closes_shards_after_the_batch_in_flight(tmp_path: Path, slow_batches: tuple[threading.Event, list[bool]],
                                                      drain_seconds: float) -> None:
    entered, closed_after_apply = slow_batches
    node = start_node(tmp_path / "data", drain_seconds)
    outcome: dict[str, object] = {}
    with StateClient(node.address, timeout=10) as client:
        client.create_namespace("ns", max_key_groups=8)
        writer = client.open_writer("ns", key_groups="0-7", epoch=1)
        state = writer.value_state("v", value_serializer=BYTES)
        state.put("in-flight", b"value")

        def flush() -> None:
            try:
                writer.flush()
                outcome["flush"] = "acknowledged"
            except StateServerError as exc:
                outcome["flush"] = exc

        flushing = threading.Thread(target=flush)
        flushing.start()
        assert entered.wait(10)
        stopping = threading.Thread(target=lambda: outcome.setdefault("clean", node.stop()))
        stopping.start()
        refused = refused_during_the_stop(node.address, stopping)  # a new call during the drain
        assert refused.code() is grpc.StatusCode.UNAVAILABLE
        stopping.join(30)
        flushing.join(30)

    assert closed_after_apply == [False], "the shard closed while its batch was being applied"
    assert outcome["clean"] is True
    if drain_seconds > APPLY_SECONDS:
        assert outcome["flush"] == "acknowledged"
    else:  # cancelled by gRPC after the grace period: the client was told it failed
        assert isinstance(outcome["flush"], StateServerError)

    # Applied before the close in both cases, so flushed to disk by it.
    assert stored_values(tmp_path / "data", "ns", "v") == {b"in-flight": b"value"}
    restarted = start_node(tmp_path / "data", drain_seconds)
    try:
        with StateClient(restarted.address, timeout=10) as client:
            if outcome["flush"] == "acknowledged":
                client.reopen(writer)  # the same writer resumes the shard the stop closed cleanly
                assert writer.value_state("v", value_serializer=BYTES).get("in-flight") == b"value"
            else:  # its batch was cut: the session failed, and only a restore brings it back
                with pytest.raises(RestoreRequiredError):
                    client.reopen(writer)
    finally:
        restarted.stop()


def test_a_second_node_on_the_same_data_directory_fails_to_start(tmp_path: Path) -> None:
    node = start_node(tmp_path / "data", 1.0)
    try:
        with pytest.raises(NodeStartError, match="in use by another node"):
            Node(NodeConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "data"))
    finally:
        node.stop()
    start_node(tmp_path / "data", 1.0).stop()  # the lock goes with the node

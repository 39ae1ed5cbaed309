"""The client heals (issue 12, point 4) against real node processes: a node marked unavailable is
probed again and used once it answers; a node that is down gives ``UnavailableError`` every time
(never ``IndexError`` or ``ValueError``) and is used again within 2 s of serving; a node whose
object store is out answers UNAVAILABLE itself and is not routed around for good.

Each test fails on the code before the change, as its docstring says."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from stateserver.client import ClientSettings, StateClient, StateServerError, UnavailableError
from support.fault_node import launch_fault_node
from support.node import wait_serving
from support.fault_control import write_control
from support.node import NodeProcess, free_loopback_port, start_node, unique_namespace

T = TypeVar("T")
HEALED_WITHIN_S = 2.0

pytestmark = pytest.mark.timeout(120)


def test_every_node_marked_unavailable_is_probed_again_instead_of_failing_with_index_or_value_error(
        node: NodeProcess, request: pytest.FixtureRequest) -> None:
    """Before: ``create_namespace`` raised ``ValueError: max() arg is an empty sequence`` and
    ``max_key_groups``/``commit_checkpoint`` ``IndexError`` once every node was marked, for good."""
    namespace = unique_namespace(request.node.name)
    members = node.worker_addresses  # a node of several workers: every worker is a node to the client

    def mark_every_member() -> None:
        for member in members:
            state.mark_unavailable(member)

    with StateClient(node.address, timeout=20) as state:
        state.refresh()
        mark_every_member()
        assert state.create_namespace(namespace, max_key_groups=128) == 128
        assert not set(members) & state.unavailable, "the probe found the workers and they are used again"
        mark_every_member()
        assert state.max_key_groups(namespace) == 128
        mark_every_member()
        writer = state.open_writer(namespace, key_groups="0-127", epoch=state.next_epoch(namespace))
        counts = writer.aggregating_state("counts", merge_operator="sum_int64")
        counts.merge("apple", 2)
        writer.snapshot(1)
        handles = writer.await_snapshot(1)
        mark_every_member()
        state.commit_checkpoint(namespace, 1, handles, writers=[writer], metadata=b"offset=1")
        assert state.checkpoint_metadata(namespace).metadata == b"offset=1"
        writer.close()


def test_a_stopped_node_is_unavailable_every_time_and_used_again_within_two_seconds_of_serving(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Before: the second call while the node was down raised ``ValueError`` (``max()`` of no
    replies), later ones ``IndexError``, and after the restart the node stayed marked: every call
    failed until ``refresh(forget_unavailable=True)``."""
    namespace = unique_namespace(request.node.name)
    port = free_loopback_port()
    node = start_node(tmp_path / "data", port=port)
    try:
        with StateClient(node.address, settings=ClientSettings(request_timeout=10)) as state:
            state.create_namespace(namespace, max_key_groups=128)
            writer = state.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=state.next_epoch(namespace))
            counts = writer.aggregating_state("counts", merge_operator="sum_int64")
            counts.merge("apple", 3)
            writer.flush()
            writer.close()  # a clean close: the same writer may resume after the restart
            assert node.stop() == 0

            calls: list[Callable[[], object]] = [
                lambda: state.create_namespace(namespace, max_key_groups=128),
                lambda: state.max_key_groups(namespace),
                lambda: state.next_epoch(namespace),
                lambda: state.checkpoint_metadata(namespace),
                lambda: state.reopen(writer),
            ]
            for _ in range(3):
                for call in calls:
                    with pytest.raises(UnavailableError):
                        call()

            node = start_node(tmp_path / "data", port=port)  # returns once it reports SERVING
            serving = time.monotonic()
            assert _first_success(lambda: state.max_key_groups(namespace)) == 128
            assert time.monotonic() - serving <= HEALED_WITHIN_S, "used again within 2 s of serving"
            assert not state.unavailable
            state.reopen(writer)  # resumes the cleanly closed shards on the restarted node
            assert counts.get("apple") == 3
            counts.merge("apple", 1)
            assert counts.get("apple") == 4
            writer.close()
    finally:
        node.stop()


def test_an_object_store_outage_does_not_mark_the_node_unavailable(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The node answers UNAVAILABLE (with its reason) while its store is out; it is reachable and
    must not be routed around. Before: it was marked unavailable for good, so once the store was
    back every call still failed with ``every node is unavailable``."""
    namespace = unique_namespace(request.node.name)
    control = tmp_path / "faults.json"
    write_control(control, seed=1, generation=1, rules=[])
    node = wait_serving(launch_fault_node(tmp_path / "data", port=free_loopback_port(), control_path=control))
    try:
        with StateClient(node.address, timeout=20) as state:
            state.create_namespace(namespace, max_key_groups=128)
            assert state.next_epoch(namespace) == 1
            write_control(control, seed=1, generation=2, rules=[
                {"ops": ["put", "put_if_absent", "get", "head", "list", "exists"], "kind": "error",
                 "probability": 1.0}])
            with pytest.raises(UnavailableError) as outage:
                state.next_epoch(namespace)
            assert outage.value.reason == "unavailable"  # the node said so: it is there
            assert node.address not in state.unavailable
            write_control(control, seed=1, generation=3, rules=[])  # the store is back
            assert state.next_epoch(namespace) == 2
    finally:
        node.stop()


def _first_success(call: Callable[[], T], timeout: float = 10.0) -> T:
    """``call()`` again until it succeeds; only StateServerError may come out meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except StateServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)

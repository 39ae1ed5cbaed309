"""A node of two worker processes under a supervisor (``serve --workers 2``, issue 14 point 1),
all real processes: it serves a client end to end with shards on both workers, restores into a
fresh two-worker node, restarts a worker killed by SIGKILL (whose shards come back through
``recover()`` with exactly the checkpoint's state), says NOT_SERVING while a worker is down,
drains every worker on SIGTERM and leaves no process behind, even when the supervisor itself is
killed, and serves one metrics endpoint for both workers.

Every test fails on the code before the change: ``serve`` had no ``--workers`` (the node does not
start: exit 2, unrecognized argument).
"""
from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from stateserver.client import CheckpointCoordinator, KeyedStateBackend, StateClient, StateServerError
from stateserver.protocol import placement
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.waiting import wait_until
from support.node import (
    SERVICE_NAME, NodeProcess, free_loopback_port, free_port_block, namespace_on_every_worker, run_node, start_node,
    unique_namespace,
)

MAX_KEY_GROUPS = 128
# Eight shards, over a namespace chosen so that each worker gets some: placement hashes the
# workers' random ports, and would leave one of two without any in about 1 run of 128.
RANGES = [f"{start}-{start + 15}" for start in range(0, MAX_KEY_GROUPS, 16)]
SHARDS = [(int(start), int(end)) for start, _, end in (r.partition("-") for r in RANGES)]
KEYS = [f"key-{i}" for i in range(400)]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def open_shards(address: str) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        return list(state_pb2_grpc.StateServiceStub(channel).NodeInfo(pb.NodeInfoRequest(), timeout=5).open_shards)


def node_health(node: NodeProcess) -> int:
    try:
        return node.health_status("", timeout=1.0)
    except grpc.RpcError:
        return -1


def gone(pid: int) -> bool:
    """The process exited (a zombie nobody reaped yet counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_two_workers_serve_a_client_end_to_end_and_restore_into_a_fresh_node(tmp_path: Path,
                                                                          request: pytest.FixtureRequest) -> None:
    store = (tmp_path / "store").as_uri()
    expected = {key: i for i, key in enumerate(KEYS)}
    with run_node(tmp_path / "a", workers=2, extra_args=["--snapshot-url", store]) as node:
        namespace = namespace_on_every_worker(node, request.node.name, SHARDS)
        with StateClient(node.address, timeout=20) as client:
            assert sorted(client.refresh()) == sorted(node.worker_addresses), "clients learn every worker"
            client.create_namespace(namespace, max_key_groups=MAX_KEY_GROUPS)
            writer = client.open_writer(namespace, key_groups=RANGES, epoch=1)
            values = writer.value_state("v")
            for key, value in expected.items():
                values.put(key, value)
            writer.flush()
            assert {key: values.get(key) for key in KEYS} == expected
            per_worker = [open_shards(address) for address in node.worker_addresses]
            assert all(per_worker), f"shards on both workers: {per_worker}"
            assert sum(map(len, per_worker)) == len(RANGES)
            writer.snapshot(1)
            client.commit_checkpoint(namespace, 1, writer.await_snapshot(1), writers=[writer])
            writer.close()
    with run_node(tmp_path / "b", workers=2, extra_args=["--snapshot-url", store]) as fresh:
        with StateClient(fresh.address, timeout=20) as client:
            client.create_namespace(namespace, max_key_groups=MAX_KEY_GROUPS)
            writer = client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=2, restore="latest")
            values = writer.value_state("v")
            assert {key: values.get(key) for key in KEYS} == expected
            writer.close()


def test_a_killed_worker_is_restarted_and_its_shards_recover_exactly(tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    with run_node(tmp_path / "data", workers=2) as node, StateClient(node.address, timeout=20) as client:
        namespace = namespace_on_every_worker(node, request.node.name, SHARDS)
        client.create_namespace(namespace, max_key_groups=MAX_KEY_GROUPS)
        coordinator = CheckpointCoordinator(client, namespace)
        subtasks = [KeyedStateBackend(client, namespace, key_groups=RANGES)]
        coordinator.recover(subtasks)
        values = subtasks[0].writer.value_state("v")
        for i, key in enumerate(KEYS):
            values.put(key, i)
        coordinator.checkpoint(subtasks, metadata=b"offset=400")
        for key in KEYS:
            values.put(key, -1)  # after the checkpoint: a recovery drops these
        subtasks[0].writer.flush()
        assert open_shards(node.worker_addresses[1]), "worker 1 holds shards to lose"

        killed = node.worker_pid(1)
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: gone(killed), what="the worker to die")
        wait_until(lambda: (node.data_dir / "worker-1" / "node.lock").read_text().strip() not in ("", str(killed)),
                   what="the supervisor to restart worker 1")
        wait_until(lambda: node_health(node) == SERVING, what="the node to serve again")
        assert node.is_alive()
        assert open_shards(node.worker_addresses[1]) == [], "a crashed worker's shards are not served as they are"

        with pytest.raises(StateServerError):  # the writer's shards on worker 1 are gone
            for key in KEYS:
                values.put(key, -2)
            subtasks[0].writer.flush()
        recovery = coordinator.recover(subtasks)
        assert recovery.metadata == b"offset=400"
        assert {key: values.get(key) for key in KEYS} == {key: i for i, key in enumerate(KEYS)}


def test_node_health_is_not_serving_while_a_worker_is_down(tmp_path: Path) -> None:
    with run_node(tmp_path / "data", workers=2) as node:
        assert node_health(node) == SERVING
        killed = node.worker_pid(1)
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: node_health(node) == NOT_SERVING, timeout=5, what="NOT_SERVING")
        assert node.health_status(SERVICE_NAME) == SERVING, "worker 0 itself still serves"
        wait_until(lambda: node_health(node) == SERVING, what="SERVING once the worker is back")
        assert node.worker_pid(1) != killed


def test_sigterm_drains_every_worker_and_leaves_no_process(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    node = start_node(tmp_path / "data", workers=2)
    try:
        namespace = namespace_on_every_worker(node, request.node.name, SHARDS)  # every worker has shards to close
        pids = [node.pid, node.worker_pid(0), node.worker_pid(1)]
        with StateClient(node.address, timeout=20) as client:
            client.create_namespace(namespace, max_key_groups=MAX_KEY_GROUPS)
            writer = client.open_writer(namespace, key_groups=RANGES, epoch=1)
            values = writer.value_state("v")
            for key in KEYS:
                values.put(key, 1)
            writer.flush()  # left open: the drain closes the shards
    finally:
        code = node.stop()
    assert code == 0, node.log_tail()
    assert all(gone(pid) for pid in pids), "no worker outlives its node"
    for index in (0, 1):  # each worker flushed and closed its shards on the way out
        assert list((node.data_dir / f"worker-{index}").rglob("STATESERVER-CLEAN.json")), f"worker {index}"


def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with run_node(tmp_path / "data", workers=2) as node:
        workers = [node.worker_pid(0), node.worker_pid(1)]
        os.kill(node.pid, signal.SIGKILL)
        wait_until(lambda: all(gone(pid) for pid in workers), timeout=20, what="orphaned workers to exit")
    log = node.log_path.read_text()
    assert log.count('"event":"node stopped"') == 2, "each worker drained"


def test_one_metrics_endpoint_carries_every_workers_series(tmp_path: Path) -> None:
    metrics_port = free_loopback_port()
    with run_node(tmp_path / "data", workers=2, extra_args=["--metrics-port", str(metrics_port)]):
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    assert "stateserver_node_workers 2.0" in text
    for index in (0, 1):
        assert f'process_resident_memory_bytes{{worker="{index}"}}' in text
        assert f'stateserver_node_worker_up{{worker="{index}"}} 1.0' in text


def test_a_node_whose_name_does_not_resolve_advertises_every_worker(tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    """A node named by a name that resolves nowhere (not even where it runs), dialled at its
    advertised address, as with one worker (tests/cluster/test_cluster_advertised.py). Each worker
    knows where its siblings are dialled by the rule, without asking them. Fails on the code before:
    worker 0 learned worker 1's advertised address only by dialling worker 1's name, which does not
    resolve, so NodeInfo never named it, and clients dialled the name of worker 1 and failed."""
    port = free_port_block(2)
    name = f"node-a.invalid:{port}"  # .invalid never resolves (RFC 2606)
    advertised = {f"node-a.invalid:{port + i}": f"127.0.0.1:{port + i}" for i in (0, 1)}
    namespace = next(n for n in (unique_namespace(request.node.name) for _ in range(100))
                     if len({placement.owner(f"{n}/{r}", list(advertised)) for r in RANGES}) == 2)
    with run_node(tmp_path / "data", port=port, workers=2, extra_args=[
            "--nodes", name, "--node-id", name, "--advertised-address", f"127.0.0.1:{port}"]) as node:
        for index in (0, 1):
            info = state_pb2_grpc.StateServiceStub(node.worker_channel(index)).NodeInfo(pb.NodeInfoRequest(), timeout=5)
            assert (list(info.nodes), dict(info.advertised_addresses)) == (sorted(advertised), advertised), index
        with StateClient(node.address, timeout=20) as client:
            client.create_namespace(namespace, max_key_groups=MAX_KEY_GROUPS)
            writer = client.open_writer(namespace, key_groups=RANGES, epoch=1)
            assert {s.connection.address for s in writer.sessions} == set(advertised), "shards on both workers"
            values = writer.value_state("v")
            values.put_many({key: i for i, key in enumerate(KEYS)})
            writer.flush()
            assert values.get_many(KEYS) == list(range(len(KEYS)))
            writer.close()

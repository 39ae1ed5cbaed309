"""Source positions travel with the checkpoint (issue 12, point 2): the operator's metadata blob is
committed in CheckpointMetadata, read back by ``checkpoint_metadata``, shown by ``stateserver
checkpoints show``, and an oversized one is refused with nothing committed.

These fail on the code before the change: ``commit_checkpoint`` took no ``metadata`` (TypeError),
CheckpointMetadata had no field for it and there was no DescribeCheckpoint RPC.
"""
from __future__ import annotations

import asyncio
import base64
import pathlib
import subprocess
import sys

import grpc
import pytest

from stateserver.client import CheckpointCoordinator, InvalidArgumentError, KeyedStateBackend, NotFoundError, StateClient
from stateserver.client.aio import AsyncStateClient
from stateserver.snapshot.catalog import MAX_OPERATOR_METADATA_BYTES, CheckpointCatalog
from stateserver.store import open_store
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import checkpoint_pb2_grpc
from support.node import NodeProcess

STATESERVER = pathlib.Path(sys.executable).parent / "stateserver"


def _snapshot_url(node: NodeProcess) -> str:
    return (node.data_dir / "snapshots").resolve().as_uri()


def _job(client: StateClient, namespace: str) -> tuple[CheckpointCoordinator, list[KeyedStateBackend]]:
    coordinator = CheckpointCoordinator(client, namespace, epoch=1)
    subtasks = [KeyedStateBackend(client, namespace, key_groups=r, epoch=1) for r in ("0-63", "64-127")]
    coordinator.initialize(subtasks)
    subtasks[0].writer.value_state("v").put("k", 1)  # key group 29
    return coordinator, subtasks


def test_metadata_round_trips_with_the_checkpoint(client: StateClient, namespace: str) -> None:
    coordinator, subtasks = _job(client, namespace)
    with pytest.raises(NotFoundError):
        client.checkpoint_metadata(namespace)
    first = coordinator.checkpoint(subtasks, metadata=b'{"partition-0": 120}')
    second = coordinator.checkpoint(subtasks, metadata=b"\x00\xffbinary")
    latest = client.checkpoint_metadata(namespace)
    assert (latest.checkpoint_id, latest.metadata) == (second, b"\x00\xffbinary")
    assert client.checkpoint_metadata(namespace, first).metadata == b'{"partition-0": 120}'
    assert client.checkpoint_metadata(namespace, first).committed_at_millis > 0

    async def read() -> bytes:
        async with AsyncStateClient(client.seeds) as aio:
            return (await aio.checkpoint_metadata(namespace, first)).metadata

    assert asyncio.run(read()) == b'{"partition-0": 120}'


def test_checkpoints_show_prints_the_metadata(client: StateClient, namespace: str, node: NodeProcess) -> None:
    coordinator, subtasks = _job(client, namespace)
    text = coordinator.checkpoint(subtasks, metadata=b'{"offset": 1500}')
    binary = coordinator.checkpoint(subtasks, metadata=b"\x00\x01\xfe")
    plain = coordinator.checkpoint(subtasks)

    def show(checkpoint: int) -> str:
        result = subprocess.run([str(STATESERVER), "checkpoints", "show", "--snapshot-url", _snapshot_url(node),
                                 "--namespace", namespace, "--checkpoint", str(checkpoint)],
                                capture_output=True, text=True, timeout=60, check=True)
        return result.stdout

    assert '  metadata    16 bytes, utf-8 text: {"offset": 1500}\n' in show(text)
    encoded = base64.b64encode(b"\x00\x01\xfe").decode()
    assert f"  metadata    3 bytes, base64: {encoded}\n" in show(binary)
    assert "  metadata    none\n" in show(plain)


def test_oversized_metadata_is_refused_and_nothing_is_committed(client: StateClient, namespace: str,
                                                                node: NodeProcess) -> None:
    coordinator, subtasks = _job(client, namespace)
    too_big = b"x" * (MAX_OPERATOR_METADATA_BYTES + 1)
    catalog = CheckpointCatalog(open_store(_snapshot_url(node)))

    # The client refuses it at the call, before any request.
    checkpoint_id = coordinator.next_checkpoint_id()
    for subtask in subtasks:
        subtask.snapshot_state(checkpoint_id)
    handles = [h for subtask in subtasks for h in subtask.await_durable(checkpoint_id)]
    with pytest.raises(InvalidArgumentError, match="1 MiB"):
        client.commit_checkpoint(namespace, checkpoint_id, handles, writers=[s.writer for s in subtasks],
                                 metadata=too_big)
    # The node refuses it too, whoever sends it: INVALID_ARGUMENT, nothing committed.
    channel = grpc.insecure_channel(node.address)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            checkpoint_pb2_grpc.CheckpointServiceStub(channel).CommitCheckpoint(
                cpb.CommitCheckpointRequest(namespace=namespace, checkpoint_id=checkpoint_id, shards=handles,
                                            operator_metadata=too_big), timeout=20)
    finally:
        channel.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert catalog.committed_ids(namespace) == []
    # The coordinator aborts the checkpoint; exactly the limit commits.
    with pytest.raises(InvalidArgumentError):
        coordinator.checkpoint(subtasks, metadata=too_big)
    assert catalog.committed_ids(namespace) == []
    at_limit = coordinator.checkpoint(subtasks, metadata=b"y" * MAX_OPERATOR_METADATA_BYTES)
    assert client.checkpoint_metadata(namespace).checkpoint_id == at_limit
    assert client.checkpoint_metadata(namespace).metadata == b"y" * MAX_OPERATOR_METADATA_BYTES


def test_a_bad_checkpoint_name_is_refused_before_any_call(client: StateClient, namespace: str) -> None:
    for bad in (0, -1, "newest", True):
        with pytest.raises(InvalidArgumentError):
            client.checkpoint_metadata(namespace, bad)  # type: ignore[arg-type]

"""A newer writer fences the older one at once on a node of several workers, as on one process.

Placement routes each shard to a worker by its key groups, so when a job rescales, the new
shards may open on another worker than the old ones. The old code fenced only the shards of the
worker that ran the open: the old writer's shard on the other worker kept taking writes (its
flush succeeded) until it tried to commit. These tests pick namespaces where the old and the new
shards belong on different workers (checked, not assumed), so each fails on that code.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import grpc
import pytest

from stateserver.client import INT64, FencedError, StateClient
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.checkpoints import commit
from support.node import NodeProcess, run_node, unique_namespace

KEYS = [f"key-{i}" for i in range(64)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with run_node(tmp_path_factory.mktemp("fencing"), workers=2) as started:
        yield started


def _ranges(text: Sequence[str]) -> list[tuple[int, int]]:
    return [(int(start), int(end)) for start, _, end in (r.partition("-") for r in text)]


def _namespace_apart(node: NodeProcess, old: Sequence[str], new: Sequence[str]) -> str:
    """A namespace where no new shard belongs on a worker of an old shard it overlaps."""
    while True:
        name = unique_namespace("apart")
        apart = all(node.shard_worker(name, o) != node.shard_worker(name, n)
                    for o, n in itertools.product(_ranges(old), _ranges(new))
                    if o[0] <= n[1] and n[0] <= o[1])
        if apart:
            return name


@pytest.mark.parametrize("old_ranges, new_ranges", [
    (["0-127"], ["0-63", "64-127"]),   # scale out
    (["0-63", "64-127"], ["0-127"]),   # scale in: one of the old shards is on the other worker
])
def test_a_rescaled_writer_fences_the_old_one_on_the_other_worker(
        node: NodeProcess, old_ranges: list[str], new_ranges: list[str]) -> None:
    namespace = _namespace_apart(node, old_ranges, new_ranges)
    with StateClient(node.address, timeout=20) as client:
        client.create_namespace(namespace, max_key_groups=128)
        old = client.open_writer(namespace, key_groups=old_ranges, epoch=1)
        values = old.value_state("v", value_serializer=INT64)
        for key in KEYS:
            values.put(key, 1)
        commit(client, old, 1)
        new = client.open_writer(namespace, key_groups=new_ranges, epoch=2, restore="latest")
        for key in KEYS:
            values.put(key, 2)
        with pytest.raises(FencedError):
            old.flush()
        with pytest.raises(FencedError):  # nor may it open those key groups again at its epoch
            client.open_writer(namespace, key_groups=old_ranges, epoch=1, restore="latest")
        new_values = new.value_state("v", value_serializer=INT64)
        assert {key: new_values.get(key) for key in KEYS} == {key: 1 for key in KEYS}
        open_now = {shard for worker in range(node.workers) for shard in _open_shards(node, worker)
                    if shard.startswith(f"{namespace}/")}
        assert open_now == {f"{namespace}/{r}" for r in new_ranges}, "the old shards were closed"


def _open_shards(node: NodeProcess, worker: int) -> list[str]:
    stub = state_pb2_grpc.StateServiceStub(node.worker_channel(worker))
    return list(stub.NodeInfo(pb.NodeInfoRequest(), timeout=10).open_shards)


@pytest.mark.parametrize("fence, problem", [
    (pb.ShardRef(namespace="any", key_group_start=9, key_group_end=3, epoch=5), "invalid key-group range"),
    (pb.ShardRef(namespace="any", key_group_start=0, key_group_end=127, epoch=2**40), "epochs run from"),
    # Added with the name check; the old code took it and applied the valid fence before it.
    (pb.ShardRef(namespace="../etc", key_group_start=0, key_group_end=127, epoch=5), "namespace name"),
])
def test_a_malformed_fence_is_invalid_and_fences_nothing(node: NodeProcess, fence: pb.ShardRef,
                                                         problem: str) -> None:
    """Every fence of a request is checked before any is applied: a valid one that comes first
    closes nothing either."""
    namespace = unique_namespace("bad-fence")
    with StateClient(node.address, timeout=20) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        worker = node.shard_worker(namespace, (0, 127))
        stub = state_pb2_grpc.StateServiceStub(node.worker_channel(worker))
        valid = pb.ShardRef(namespace=namespace, key_group_start=0, key_group_end=127, epoch=2)
        with pytest.raises(grpc.RpcError) as refused:
            stub.FenceOlderWriters(pb.FenceOlderWritersRequest(opened=[valid, fence]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert problem in (refused.value.details() or "")
        writer.value_state("v", value_serializer=INT64).put("k", 1)
        writer.flush()  # still the owner
        assert f"{namespace}/0-127" in _open_shards(node, worker)

"""A node restarted on an EMPTY data directory (a replaced disk, a new pod) learns the namespaces
from the snapshot store, the durable home of state, so recovery onto it runs by itself.

Fails on the code before the change: namespaces (max_key_groups) lived only in each node's data
directory, so the replaced node answered AllocateEpoch, DescribeCheckpoint and OpenShard with
NOT_FOUND for the namespace until someone called CreateNamespace on it again.
"""
from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from stateserver.client import StateClient, ranges_for_parallelism
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import checkpoint_pb2_grpc, state_pb2_grpc
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.store import open_store, paths
from support.cluster import expected_counts, run_cluster
from support.node import run_node

NAMESPACE = "learnt"
MAX_KEY_GROUPS = 96

pytestmark = pytest.mark.timeout(240)


def test_a_node_on_an_empty_data_directory_learns_the_namespace_from_the_store(tmp_path: Path,
                                                                               example: ModuleType) -> None:
    generator = random.Random(3)
    events = [f"key-{generator.randrange(100)}" for _ in range(1_200)]
    store_url = (tmp_path / "store").as_uri()
    with run_cluster(tmp_path / "nodes", store_url) as cluster:
        with StateClient(cluster.addresses, timeout=20) as state:
            state.create_namespace(NAMESPACE, max_key_groups=MAX_KEY_GROUPS)
            assert example.run_job(state, NAMESPACE, events, parallelism=6, checkpoint_every=400) \
                == expected_counts(events)
        assert open_store(store_url).exists(paths.namespace_definition(NAMESPACE)), "recorded in the store"

        # The node holding the most of the job's shards: on random ports a given node holds none of
        # the 6 in about 1 run of 12, and the recovery at the end would then never run onto it.
        replaced = cluster.busiest_node(NAMESPACE, ranges_for_parallelism(MAX_KEY_GROUPS, 6))
        cluster.kill(replaced)
        shutil.rmtree(cluster.data_dir(replaced))
        cluster.start(replaced)

        channel = grpc.insecure_channel(replaced)
        try:
            checkpoints = checkpoint_pb2_grpc.CheckpointServiceStub(channel)
            states = state_pb2_grpc.StateServiceStub(channel)
            epoch = checkpoints.AllocateEpoch(cpb.AllocateEpochRequest(namespace=NAMESPACE), timeout=10).epoch
            assert epoch > 1
            latest = checkpoints.DescribeCheckpoint(cpb.DescribeCheckpointRequest(namespace=NAMESPACE, latest=True),
                                                    timeout=10)
            assert latest.operator_metadata == str(len(events)).encode()
            looked_up = states.CreateNamespace(pb.CreateNamespaceRequest(namespace=NAMESPACE), timeout=10)
            assert looked_up.max_key_groups == MAX_KEY_GROUPS
            with pytest.raises(grpc.RpcError) as conflicting:
                states.CreateNamespace(pb.CreateNamespaceRequest(namespace=NAMESPACE, max_key_groups=64), timeout=10)
            assert conflicting.value.code() == grpc.StatusCode.ALREADY_EXISTS
            with pytest.raises(grpc.RpcError) as unknown:
                checkpoints.AllocateEpoch(cpb.AllocateEpochRequest(namespace="never-created"), timeout=10)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            channel.close()
        assert not open_store(store_url).exists(paths.namespace_definition("never-created")), "a lookup writes nothing"

        # The job recovers onto the replaced node (it owns some of the shards again), resumes at
        # the committed offset and goes on: exact counts.
        more = events + [f"key-{generator.randrange(100)}" for _ in range(300)]
        with StateClient(cluster.addresses, timeout=20) as state:
            assert example.run_job(state, NAMESPACE, more, parallelism=6) == expected_counts(more)


def test_a_namespace_the_store_does_not_record_is_written_back_when_its_node_starts(tmp_path: Path) -> None:
    """A namespace created before nodes recorded namespaces in the store (only its nodes' data
    directories know it) is recorded once a node that knows it starts, so a node on an empty data
    directory learns it too.

    Fails on the code before the change: nothing wrote such a namespace to the store, and the
    node on the empty directory answered NOT_FOUND for it forever.
    """
    store_url = (tmp_path / "store").as_uri()
    store = open_store(store_url)
    with run_node(tmp_path / "old", extra_args=["--snapshot-url", store_url]) as node:
        with StateClient([node.address], timeout=20) as state:
            state.create_namespace(NAMESPACE, max_key_groups=MAX_KEY_GROUPS)
    store.delete(paths.namespace_definition(NAMESPACE))  # as the code before namespace records left it

    with run_node(tmp_path / "old", extra_args=["--snapshot-url", store_url]):
        deadline = time.monotonic() + 20
        while not store.exists(paths.namespace_definition(NAMESPACE)):
            assert time.monotonic() < deadline, "the node never recorded the namespace it knows"
            time.sleep(0.1)
    with run_node(tmp_path / "empty", extra_args=["--snapshot-url", store_url]) as fresh:
        channel = grpc.insecure_channel(fresh.address)
        try:
            looked_up = state_pb2_grpc.StateServiceStub(channel).CreateNamespace(
                pb.CreateNamespaceRequest(namespace=NAMESPACE), timeout=10)
        finally:
            channel.close()
    assert looked_up.max_key_groups == MAX_KEY_GROUPS

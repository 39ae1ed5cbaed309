"""A node restarted on an EMPTY data directory (a replaced disk, a new pod) learns the namespaces
from the snapshot store, the durable home of state, so recovery onto it runs by itself.

Fails on the code before the change: namespaces (max_key_groups) lived only in each node's data
directory, so the replaced node answered AllocateEpoch, DescribeCheckpoint and OpenShard with
NOT_FOUND for the namespace until someone called CreateNamespace on it again.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from stateserver.client import StateClient
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import checkpoint_pb2_grpc, state_pb2_grpc
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.store import open_store, paths
from support.cluster import expected_counts, run_cluster

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

        replaced = cluster.addresses[1]
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

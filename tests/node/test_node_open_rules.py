"""What OpenShard may serve (DESIGN.md invariants 8 and 11), against real node processes.

A local shard directory is served as it is only when it holds exactly what its writer expects:
the same writer's shard closed cleanly (or still open), or the first open of key groups nobody
ever owned. Anything else needs ``restore`` (a checkpoint, or "empty"). One owner per epoch,
whichever node asks; a failed open changes nothing; a split range is fenced; epochs are bounded.
Each test fails on the code before this change (its docstring says how).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from stateserver.client import (
    INT64,
    FencedError,
    InvalidArgumentError,
    RestoreRequiredError,
    StateClient,
    Writer,
)
from stateserver.store import paths
from stateserver.store import open_store
from stateserver.protocol.v1 import state_pb2 as pb
from support.checkpoints import commit
from support.node import NodeProcess, namespace_on_one_worker, start_node, unique_namespace, worker_data_dirs

STATESERVER = pathlib.Path(sys.executable).parent / "stateserver"


@pytest.fixture
def store_url(tmp_path: pathlib.Path) -> str:
    """One snapshot store shared by every node of the test."""
    return (tmp_path / "store").as_uri()


@pytest.fixture
def nodes(tmp_path: pathlib.Path, store_url: str) -> Iterator[Callable[[str], NodeProcess]]:
    """Start (or restart) the node of data directory ``name``, on the shared store. A restart
    keeps the node's port, as a deployed node keeps its address: with several workers, the port
    names each worker, and so which of them a shard (and its local copy) belongs on."""
    started: list[NodeProcess] = []
    ports: dict[str, int] = {}

    def start(name: str) -> NodeProcess:
        node = start_node(tmp_path / name, extra_args=["--snapshot-url", store_url], port=ports.get(name))
        ports[name] = node.port
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def _counter(writer: Writer):  # type: ignore[no-untyped-def]
    return writer.aggregating_state("count", merge_operator="sum_int64")


def _values(writer: Writer):  # type: ignore[no-untyped-def]
    return writer.value_state("v", value_serializer=INT64)


def _owner_records(store_url: str, namespace: str) -> list[dict[str, object]]:
    store = open_store(store_url)
    return [json.loads(store.get(m.key)) for m in store.list(paths.owners_prefix(namespace))]


def test_a_crashed_shard_needs_a_restore_and_latest_gives_exactly_the_checkpoint(
        nodes: Callable[[str], NodeProcess]) -> None:
    """After SIGKILL (WAL off) the old code reopened the torn directory without a word."""
    node = nodes("a")
    namespace = unique_namespace("crash")
    with StateClient(node.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        _values(writer).put("k1", 1)
        _counter(writer).merge("c", 1)
        commit(client, writer, 1)
        _values(writer).put("k1", 101)  # one acknowledged batch: a put and a merge
        _counter(writer).merge("c", 100)
        writer.flush()
    node.kill()
    node = nodes("a")
    with StateClient(node.address) as client:
        with pytest.raises(RestoreRequiredError, match="restore="):
            client.open_writer(namespace, key_groups="0-127", epoch=2)
        with pytest.raises(RestoreRequiredError, match="not closed cleanly"):
            client.reopen(writer)  # not even its own writer gets the torn copy
        restored = client.open_writer(namespace, key_groups="0-127", epoch=2, restore="latest")
        assert (_values(restored).get("k1"), _counter(restored).get("c")) == (1, 1)


def test_a_node_back_on_its_old_data_dir_never_serves_its_stale_copy(nodes: Callable[[str], NodeProcess]) -> None:
    """The old code served the copy of epoch 1 (k1=1) to a writer at epoch 3, where the truth was 101."""
    namespace = unique_namespace("stale-dir")
    first = nodes("a")
    with StateClient(first.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        _values(writer).put("k1", 1)
        commit(client, writer, 1)
        writer.close()
    first.stop()
    second = nodes("b")  # the job moved on elsewhere
    with StateClient(second.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=2, restore="latest")
        _values(writer).put("k1", 101)
        commit(client, writer, 2)
    second.stop()
    first = nodes("a")
    with StateClient(first.address) as client:
        with pytest.raises(RestoreRequiredError, match="epoch 1"):
            client.open_writer(namespace, key_groups="0-127", epoch=3)
        assert _values(client.open_writer(namespace, key_groups="0-127", epoch=3, restore="latest")).get("k1") == 101


def test_a_wider_range_over_existing_shards_needs_a_restore_or_empty(nodes: Callable[[str], NodeProcess]) -> None:
    """The old code opened 0-127 over four shards as an empty shard without a word."""
    node = nodes("a")
    # Every shard on one worker: what the wide open finds is that worker's own directories.
    namespace = namespace_on_one_worker(node, "wider", [(0, 31), (32, 63), (64, 95), (96, 127), (0, 127)])
    with StateClient(node.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        narrow = client.open_writer(namespace, key_groups=["0-31", "32-63", "64-95", "96-127"], epoch=1)
        _values(narrow).put_many({f"k{i}": i for i in range(100)})
        narrow.close()
        with pytest.raises(RestoreRequiredError, match="overlapping"):
            client.open_writer(namespace, key_groups="0-127", epoch=2)
        empty = client.open_writer(namespace, key_groups="0-127", epoch=2, restore="empty")
        assert _values(empty).get_many([f"k{i}" for i in range(100)]) == [None] * 100
        # The narrow copies are gone for good: they cannot come back as they were (renamed away at
        # once, removed in the background).
        shards = node.shard_data_dir(namespace, (0, 127)) / "namespaces" / namespace / "shards"
        deadline = time.monotonic() + 10
        while sorted(p.name for p in shards.iterdir()) != ["0-127"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(p.name for p in shards.iterdir()) == ["0-127"]


def test_a_second_owner_at_the_same_epoch_is_fenced_on_any_node(
        nodes: Callable[[str], NodeProcess], store_url: str) -> None:
    """The old code let a second owner in at the same epoch: on another node, and on the same one."""
    namespace = unique_namespace("same-epoch")
    one, two = nodes("a"), nodes("b")
    with StateClient(one.address) as first_client, StateClient(two.address) as second_client, \
            StateClient(one.address) as third_client:
        first_client.create_namespace(namespace, max_key_groups=128)
        second_client.create_namespace(namespace, max_key_groups=128)
        owner = first_client.open_writer(namespace, key_groups="0-127", epoch=5)
        _values(owner).put("k", 5)
        for other_client in (second_client, third_client):  # another node, then the same one
            with pytest.raises(FencedError, match="use a newer epoch"):
                other_client.open_writer(namespace, key_groups="0-127", epoch=5)
            with pytest.raises(FencedError, match="use a newer epoch"):
                other_client.open_writer(namespace, key_groups="0-127", epoch=5, restore="empty")
        commit(first_client, owner, 1)  # the one owner goes on and commits
        assert _values(owner).get("k") == 5
    records = _owner_records(store_url, namespace)
    assert [(r["epoch"], r["owner_id"]) for r in records] == [(5, owner.owner_id)]


def test_a_failed_open_changes_nothing(nodes: Callable[[str], NodeProcess], store_url: str) -> None:
    """The old code claimed epoch 2 before it found the state of another kind: the writer at
    epoch 1 was fenced by an open that failed."""
    node = nodes("a")
    namespace = unique_namespace("failed-open")
    with StateClient(node.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        _counter(writer).merge("c", 1)
        commit(client, writer, 1)
        wrong_kind = pb.StateDescriptor(name="count", kind=pb.STATE_KIND_VALUE)
        request = pb.OpenShardRequest(shard=pb.ShardRef(namespace=namespace, key_group_end=127, epoch=2),
                                      states=[wrong_kind], restore=pb.RestoreSource(latest=True))
        with pytest.raises(grpc.RpcError) as failed:
            node.shard_stub(namespace, (0, 127)).OpenShard(request, timeout=30)
        assert failed.value.code() == grpc.StatusCode.ALREADY_EXISTS
        _counter(writer).merge("c", 10)  # the old writer goes on writing and committing
        commit(client, writer, 2)
        assert _counter(writer).get("c") == 11
        restored = client.open_writer(namespace, key_groups="0-127", epoch=3, restore="latest")
        assert _counter(restored).get("c") == 11
    assert sorted(r["epoch"] for r in _owner_records(store_url, namespace)) == [1, 3]
    shards = node.shard_data_dir(namespace, (0, 127)) / "namespaces" / namespace / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["0-127"]  # no restore left behind


def test_a_writer_whose_range_a_newer_epoch_split_is_fenced(nodes: Callable[[str], NodeProcess]) -> None:
    """The old code told the writer of 0-127 "open it first" (ShardNotOpen), not FencedError."""
    node = nodes("a")
    namespace = unique_namespace("split")
    with StateClient(node.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        old = client.open_writer(namespace, key_groups="0-127", epoch=1)
        _values(old).put("k", 1)
        commit(client, old, 1)
        new = client.open_writer(namespace, key_groups=["0-63", "64-127"], epoch=2, restore="latest")
        _values(old).put("k", 2)
        with pytest.raises(FencedError):
            old.flush()
        assert _values(new).get("k") == 1


def test_an_epoch_beyond_the_bound_is_invalid_and_changes_nothing(
        nodes: Callable[[str], NodeProcess], store_url: str) -> None:
    """The old code accepted epoch 2**64-1, which locked every later writer out for good."""
    node = nodes("a")
    namespace = unique_namespace("epoch-bound")
    with StateClient(node.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        _values(writer).put("k", 1)
        commit(client, writer, 1)
        for epoch in (2**64 - 1, 2**32):
            with pytest.raises(InvalidArgumentError, match="epochs run from 0 to 4294967295"):
                client.open_writer(namespace, key_groups="0-127", epoch=epoch, restore="latest")
        stray = pb.WriteBatchRequest(shard=pb.ShardRef(namespace=namespace, key_group_end=127, epoch=2**64 - 1))
        with pytest.raises(grpc.RpcError) as refused:
            node.shard_stub(namespace, (0, 127)).WriteBatch(stray, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _values(writer).put("k", 2)  # nothing changed: the writer at epoch 1 still owns the shard
        writer.flush()
        assert _values(writer).get("k") == 2
        newer = client.open_writer(namespace, key_groups="0-127", epoch=2**32 - 1, restore="latest")
        assert _values(newer).get("k") == 1
    assert sorted(r["epoch"] for r in _owner_records(store_url, namespace)) == [1, 2**32 - 1]


def test_leftover_restores_are_swept_at_start(tmp_path: pathlib.Path, nodes: Callable[[str], NodeProcess]) -> None:
    """The old code left what a crash mid-restore left behind, for ever."""
    leftovers = []
    for data_dir in worker_data_dirs(tmp_path / "a"):  # each worker sweeps its own directory
        shards = data_dir / "namespaces" / "ns" / "shards"
        leftovers += [shards / ".0-127.restoring-1a2b3c4d", shards / ".0-63.replaced-5e6f7a8b",
                      shards / "..0-63.restoring-0a0b0c0d.restoring-1111aaaa"]
        for leftover in leftovers[-3:]:
            leftover.mkdir(parents=True)
            (leftover / "000007.sst").write_bytes(b"x" * 1000)
        (shards.parent / "namespace.json").write_text('{"max_key_groups": 128}')
    nodes("a")
    assert not [p for p in leftovers if p.exists()]


def test_stateserver_restore_refuses_a_running_nodes_data_dir(nodes: Callable[[str], NodeProcess],
                                                                store_url: str) -> None:
    """The old code restored into the data directory under a running node's feet."""
    node, other = nodes("a"), nodes("b")  # the checkpoint comes from the other node: "a" holds no shard of it
    namespace = unique_namespace("cli-lock")
    with StateClient(other.address) as client:
        client.create_namespace(namespace, max_key_groups=128)
        writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
        _values(writer).put("k", 1)
        commit(client, writer, 1)
    result = subprocess.run([str(STATESERVER), "restore", "--snapshot-url", store_url, "--namespace", namespace,
                             "--checkpoint", "latest", "--data-dir", str(node.data_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another node" in lines[0] and "stop the node first" in lines[0], lines
    assert node.is_serving()
    assert not list(node.data_dir.glob(f"**/namespaces/{namespace}"))  # in no worker's directory either

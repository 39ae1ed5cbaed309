"""Workers racing for a shard on their node's shelf (``node.shelved_shards.ShardShelf``), and a
shelved shard that overlaps the requested key groups without matching them.

The shelf is the node's own data directory, where a node that ran as one process (or ``stateserver
restore``) left its shards; a worker takes one by renaming it into its own directory. Two workers
may ask for the same shard at once (a writer that failed over to the other worker while its first
open was still on its way): exactly one gets the directory and serves its data; the other never
serves an empty or partial shard (invariant 8), it hears RestoreRequired. The existing end-to-end
tests of the shelf are in tests/cli/test_cli_checkpoints.py (a restored directory served by a
two-worker node; resuming a superset of two restored shards is refused).
"""
from __future__ import annotations

import filecmp
import shutil
import threading
from pathlib import Path

import grpc
import pytest

from restore.state_builder import small_resources
from stateserver.client import RestoreRequiredError, StateClient, ValueState, Writer
from stateserver.node.registry import ShardRegistry
from stateserver.node.shelved_shards import ShardShelf
from stateserver.protocol.errors import RestoreRequired
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.limits import Limits
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from stateserver.shard.shard import ShardId
from support.node import (
    free_port_block, keys_in_key_groups, read_request, read_values, rpc_error_reason, run_node, shard_ref,
    write_request,
)

NAMESPACE = "shelved"
MAX_KEY_GROUPS = 128
SHELVED = KeyGroupRange(0, 63)
STATES = [pb.StateDescriptor(name="v", kind=pb.STATE_KIND_VALUE)]
WAIT_S = 30.0


def shelf_path(node_dir: Path, key_groups: KeyGroupRange) -> Path:
    return node_dir / "namespaces" / NAMESPACE / "shards" / str(key_groups)


def worker_path(node_dir: Path, index: int, key_groups: KeyGroupRange = SHELVED) -> Path:
    return node_dir / f"worker-{index}" / "namespaces" / NAMESPACE / "shards" / str(key_groups)


@pytest.fixture(scope="module")
def shard_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real shard directory (RocksDB files and a clean-close record), to be copied onto shelves."""
    data_dir = tmp_path_factory.mktemp("template")
    registry = ShardRegistry(data_dir, small_resources(), Limits())
    registry.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
    registry.open_shard(NAMESPACE, SHELVED.start, SHELVED.end, 1, [])
    assert registry.close_all() == 0
    return shelf_path(data_dir, SHELVED)


def shelve(node_dir: Path, template: Path, key_groups: KeyGroupRange = SHELVED) -> Path:
    path = shelf_path(node_dir, key_groups)
    shutil.copytree(template, path)
    return path


def same_tree(left: Path, right: Path) -> bool:
    names = sorted(p.relative_to(left) for p in left.rglob("*"))
    if names != sorted(p.relative_to(right) for p in right.rglob("*")):
        return False
    return all(filecmp.cmp(left / n, right / n, shallow=False) for n in names if (left / n).is_file())


def test_two_workers_taking_the_same_shelved_shard_at_once_one_gets_it_whole(tmp_path: Path,
                                                                             shard_template: Path) -> None:
    """Many rounds of two shelves (one per worker, as in two processes) taking the same shard at
    the same moment: exactly one takes it, the directory arrives whole, nothing is left behind."""
    for round_number in range(40):
        node_dir = tmp_path / f"node-{round_number}"
        shelve(node_dir, shard_template)
        shelves = [ShardShelf(node_dir), ShardShelf(node_dir)]
        start = threading.Barrier(2)
        taken: list[bool | None] = [None, None]

        def take(index: int) -> None:
            start.wait(WAIT_S)
            taken[index] = shelves[index].take(ShardId(NAMESPACE, SHELVED), worker_path(node_dir, index))

        threads = [threading.Thread(target=take, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        assert sorted(taken, key=bool) == [False, True], (round_number, taken)
        winner = taken.index(True)
        assert same_tree(worker_path(node_dir, winner), shard_template), "the shard arrived whole"
        assert not worker_path(node_dir, 1 - winner).exists(), "the other worker got nothing"
        assert not shelf_path(node_dir, SHELVED).exists()


@pytest.mark.parametrize("requested", [KeyGroupRange(0, 31), KeyGroupRange(32, 95), KeyGroupRange(0, 127)],
                         ids=["inside", "across", "around"])
def test_a_shelved_shard_overlapping_but_not_matching_the_key_groups_is_refused(
        tmp_path: Path, shard_template: Path, requested: KeyGroupRange) -> None:
    shelved = shelve(tmp_path, shard_template)
    with pytest.raises(RestoreRequired, match=str(SHELVED)):
        ShardShelf(tmp_path).take(ShardId(NAMESPACE, requested), worker_path(tmp_path, 0, requested))
    assert same_tree(shelved, shard_template), "the shelved shard stays as it was"
    assert not worker_path(tmp_path, 0, requested).exists()


def test_a_shelved_shard_of_other_key_groups_is_left_alone(tmp_path: Path, shard_template: Path) -> None:
    shelved = shelve(tmp_path, shard_template)
    other = KeyGroupRange(64, 127)
    assert not ShardShelf(tmp_path).take(ShardId(NAMESPACE, other), worker_path(tmp_path, 0, other))
    assert same_tree(shelved, shard_template)


# -- two real worker processes --------------------------------------------------------------------


def write_shelved_shard(data_dir: Path, store_url: str, values: dict[bytes, bytes], owner_id: str) -> None:
    """As a node of one process leaves it: the writer's shard, flushed and closed cleanly by the stop."""
    with run_node(data_dir, workers=1, extra_args=["--snapshot-url", store_url]) as node:
        stub = node.stub()
        stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=NAMESPACE, max_key_groups=MAX_KEY_GROUPS),
                             timeout=10)
        ref = shard_ref(NAMESPACE, (SHELVED.start, SHELVED.end), 3)
        stub.OpenShard(pb.OpenShardRequest(shard=ref, states=STATES, owner_id=owner_id), timeout=10)
        stub.WriteBatch(write_request(ref, "v", [WriteOp.PUT] * len(values), list(values), list(values.values())),
                        timeout=10)
    assert shelf_path(data_dir, SHELVED).is_dir()


@pytest.mark.parametrize("round_number", range(3))
def test_two_worker_processes_opening_a_shelved_shard_at_once_one_serves_it_the_other_is_refused(
        tmp_path: Path, round_number: int) -> None:
    """The writer opens its shard on its worker and, at the same moment, on the other worker (it
    took the first for unavailable): one open takes the shelved directory and serves every value
    written before; the other is refused with RestoreRequired, and no empty shard is opened."""
    data_dir, store_url, owner_id = tmp_path / "data", (tmp_path / "store").as_uri(), "writer-a"
    keys = [key.encode() for key in keys_in_key_groups(200, MAX_KEY_GROUPS, SHELVED.start, SHELVED.end)]
    values = {key: b"value of " + key for key in keys}
    write_shelved_shard(data_dir, store_url, values, owner_id)

    with run_node(data_dir, workers=2, extra_args=["--snapshot-url", store_url]) as node:
        owner = node.shard_worker(NAMESPACE, (SHELVED.start, SHELVED.end))
        ref = shard_ref(NAMESPACE, (SHELVED.start, SHELVED.end), 3)
        requests = {owner: pb.OpenShardRequest(shard=ref, states=STATES, owner_id=owner_id),
                    1 - owner: pb.OpenShardRequest(shard=ref, states=STATES, owner_id=owner_id,
                                                   unavailable_nodes=[node.worker_addresses[owner]])}
        stubs = {index: state_pb2_grpc.StateServiceStub(node.worker_channel(index)) for index in (0, 1)}
        for stub in stubs.values():  # connected before the race, so that both opens leave together
            stub.NodeInfo(pb.NodeInfoRequest(), timeout=10)
        start = threading.Barrier(2)
        outcomes: dict[int, object] = {}

        def open_on(index: int) -> None:
            start.wait(WAIT_S)
            try:
                outcomes[index] = stubs[index].OpenShard(requests[index], timeout=WAIT_S)
            except Exception as exc:  # an RpcError is expected; anything else is shown by the assertion below
                outcomes[index] = exc

        threads = [threading.Thread(target=open_on, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S + 5)
        assert not any(t.is_alive() for t in threads), f"an open never returned\n{node.log_tail(60)}"

        served = [i for i, outcome in outcomes.items() if isinstance(outcome, pb.OpenShardResponse)]
        refused = [i for i, outcome in outcomes.items() if isinstance(outcome, grpc.RpcError)]
        assert len(served) == 1 and len(refused) == 1, outcomes
        winner, loser = served[0], refused[0]
        error = outcomes[loser]
        assert isinstance(error, grpc.RpcError) and rpc_error_reason(error) == "restore-required", error
        assert worker_path(data_dir, winner).is_dir() and not worker_path(data_dir, loser).exists()
        assert not shelf_path(data_dir, SHELVED).exists()
        assert read_values(stubs[winner], read_request(ref, "v", ReadOp.GET, keys)) == list(values.values())
        # The loser's worker holds no shard of these key groups: a write there is refused too.
        with pytest.raises(grpc.RpcError) as unopened:
            stubs[loser].WriteBatch(write_request(ref, "v", [WriteOp.PUT], [keys[0]], [b"lost"]), timeout=10)
        assert unopened.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_workers_older_copy_is_never_resumed_over_the_shelf(tmp_path: Path) -> None:
    """A node that ran with two workers, then as one process, then with two workers again: the
    worker holds its copy of the writer's shard from the first run, and the shelf a later one
    (the writer restored its checkpoint on the one-process node, at the same epoch and as the
    same owner, and wrote more). Which copy is newer cannot be told from the directories, so
    resuming is refused (RestoreRequired) and the writer restores; after that the shelf's copy
    is gone, so a later graceful restart resumes as usual.

    Fails on the code before the change: the worker did not look at the shelf once it had a
    directory of its own, and resumed its older copy: a value acknowledged meanwhile ("new")
    was silently replaced by the older one ("old").
    """
    data_dir, store_url = tmp_path / "data", (tmp_path / "store").as_uri()
    port = free_port_block(2)  # the same port every run: placement among the workers follows it
    args = ["--snapshot-url", store_url]
    ranges = [str(SHELVED), "64-127"]  # a checkpoint covers every key group
    key = keys_in_key_groups(1, MAX_KEY_GROUPS, SHELVED.start, SHELVED.end)[0]

    def values_of(writer: Writer) -> ValueState:
        return writer.value_state("v")  # type: ignore[no-any-return]

    with run_node(data_dir, workers=2, port=port, extra_args=args) as node, \
            StateClient(node.address, timeout=30) as client:
        client.create_namespace(NAMESPACE, max_key_groups=MAX_KEY_GROUPS)
        writer = client.open_writer(NAMESPACE, key_groups=ranges, epoch=3)
        values_of(writer).put(key, "checkpointed")
        writer.snapshot(1)
        client.commit_checkpoint(NAMESPACE, 1, writer.await_snapshot(1), writers=[writer])
        writer.notify_checkpoint_complete(1)
        values_of(writer).put(key, "old")
        writer.flush()
    with run_node(data_dir, workers=1, port=port, extra_args=args) as node, \
            StateClient(node.address, timeout=30) as client:
        client.reopen(writer, restore="latest")  # same epoch, same owner
        values_of(writer).put(key, "new")
        writer.flush()
    with run_node(data_dir, workers=2, port=port, extra_args=args) as node, \
            StateClient(node.address, timeout=30) as client:
        with pytest.raises(RestoreRequiredError):
            client.reopen(writer)
        client.reopen(writer, restore="latest")
        assert values_of(writer).get(key) == "checkpointed"
        values_of(writer).put(key, "after")
        writer.flush()
    shelf = data_dir / "namespaces" / NAMESPACE / "shards"
    assert not [p for p in shelf.iterdir() if not p.name.startswith(".")], "the restore discarded the shelf's copies"
    with run_node(data_dir, workers=2, port=port, extra_args=args) as node, \
            StateClient(node.address, timeout=30) as client:
        client.reopen(writer)
        assert values_of(writer).get(key) == "after"
        writer.close()

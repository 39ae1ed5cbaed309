"""Bad input (DESIGN.md invariant 7): a clear gRPC status, stored state unchanged, node still up.

Requests are sent with the raw stub, since the client refuses much of this itself. Every test
reads the shard's whole state before and after and asserts it did not change; after every test
the node process must still be alive and its health service SERVING.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from stateserver.protocol import merge_operators

from stateserver.protocol import wire
from stateserver.protocol.keygroups import key_group_for
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import (
    NodeProcess, keys_in_key_groups, read_request, read_values, rpc_error_reason, shard_ref, write_request,
)

KIB, MIB = 1 << 10, 1 << 20
MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_BATCH_OPS = 64 * KIB, 16 * MIB, 100_000
EPOCH = 1
LOW = (0, 63)  # the test shard: half of the namespace's 128 key groups

STATES = [
    pb.StateDescriptor(name="v", kind=pb.STATE_KIND_VALUE),
    pb.StateDescriptor(name="l", kind=pb.STATE_KIND_LIST),
    pb.StateDescriptor(name="m", kind=pb.STATE_KIND_MAP),
    pb.StateDescriptor(name="s", kind=pb.STATE_KIND_AGGREGATING, merge_operator="sum_int64"),
    pb.StateDescriptor(name="h", kind=pb.STATE_KIND_AGGREGATING, merge_operator="list_append"),
]
MALFORMED_NAMES = ["..", ".", "a/b", "/abs", "x\x00y", "n" * 10_000, "", " ", "a b", "-lead", "ü"]
INSIDE = [k.encode() for k in keys_in_key_groups(3, 128, *LOW)]
OUTSIDE = keys_in_key_groups(1, 128, 64, 127)[0].encode()


@dataclass
class SeededShard:
    stub: state_pb2_grpc.StateServiceStub
    namespace: str
    ref: pb.ShardRef

    def write(self, request: pb.WriteBatchRequest) -> pb.WriteBatchResponse:
        return self.stub.WriteBatch(request, timeout=30)

    def batch(self, state: str, ops: list[int], keys: list[bytes], values: list[bytes] | None = None,
              map_keys: list[bytes] | None = None, sequence: int = 0) -> pb.WriteBatchRequest:
        return write_request(self.ref, state, ops, keys, values, map_keys, sequence)

    def contents(self) -> dict[str, Any]:
        """Everything the shard stores for the test keys, read past any client."""
        keys = INSIDE

        def reads(state: str, op: int, map_keys: list[bytes] | None = None) -> list[bytes | None]:
            return read_values(self.stub, read_request(self.ref, state, op, keys, map_keys))

        def pages(state: str, key: bytes) -> list[tuple[bytes, bytes]]:
            reply = self.stub.Iterate(pb.IterateRequest(shard=self.ref, state=state, key=key, limit=1000), timeout=10)
            return list(zip(wire.unpack(reply.entry_keys, reply.entry_key_lengths),
                            wire.unpack(reply.values, reply.value_lengths)))

        return {
            "v": reads("v", ReadOp.GET),
            "l": reads("l", ReadOp.GET_LIST),
            "m": [pages("m", k) for k in keys],
            "s": reads("s", ReadOp.GET),
            "h": reads("h", ReadOp.GET),
        }


@pytest.fixture(autouse=True)
def node_stays_up(node: NodeProcess) -> Iterator[None]:
    yield
    assert node.is_alive(), f"the node died:\n{node.log_tail()}"
    assert node.is_serving(), f"the node does not answer health checks:\n{node.log_tail()}"


@pytest.fixture
def shard(stub: state_pb2_grpc.StateServiceStub, namespace: str) -> SeededShard:
    """Shard 0-63 of the namespace at epoch 1, with every kind of state stored under three keys."""
    ref = shard_ref(namespace, LOW, EPOCH)
    stub.OpenShard(pb.OpenShardRequest(shard=ref, states=STATES), timeout=10)
    test_shard = SeededShard(stub, namespace, ref)
    k0, k1, k2 = INSIDE
    seed = [
        test_shard.batch("v", [WriteOp.PUT] * 3, [k0, k1, k2], [b"v0", b"v1", b"v2"]),
        test_shard.batch("l", [WriteOp.LIST_APPEND] * 3, [k0, k0, k1], [b"a", b"b", b"c"]),
        test_shard.batch("m", [WriteOp.MAP_PUT] * 2, [k0, k2], [b"x", b"y"], [b"mk0", b"mk2"]),
        test_shard.batch("s", [WriteOp.MERGE] * 2, [k0, k0], [merge_operators.encode_int64(5)] * 2),
        test_shard.batch("h", [WriteOp.MERGE], [k1], [b"e"]),
    ]
    for request in seed:
        test_shard.write(request)
    return test_shard


def rpc_fails(call: Callable[[], object], code: grpc.StatusCode, match: str = "") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"{error.code()} {error.details()}"  # type: ignore[attr-defined]
    details = error.details()  # type: ignore[attr-defined]
    assert details, "an error needs a readable message"
    assert match.lower() in details.lower(), details
    return error


def test_the_seeded_state_reads_back(shard: SeededShard) -> None:
    # The baseline every other test compares with: a failure here would make them vacuous.
    contents = shard.contents()
    assert contents["v"] == [b"v0", b"v1", b"v2"]
    assert contents["l"] == [wire.pack_list([b"a", b"b"]), wire.pack_list([b"c"]), None]
    assert contents["m"] == [[(b"mk0", b"x")], [], [(b"mk2", b"y")]]
    assert contents["s"] == [merge_operators.encode_int64(10), None, None]
    assert contents["h"] == [None, wire.pack_list([b"e"]), None]


# -- unknown namespace, state, shard ------------------------------------------------------------


def test_unknown_namespace(shard: SeededShard) -> None:
    before = shard.contents()
    ref = shard_ref("no-such-namespace", LOW, EPOCH)
    stub = shard.stub
    rpc_fails(lambda: stub.WriteBatch(write_request(ref, "v", [WriteOp.PUT], [INSIDE[0]], [b"x"])),
              grpc.StatusCode.NOT_FOUND, "no-such-namespace")
    rpc_fails(lambda: stub.ReadBatch(read_request(ref, "v", ReadOp.GET, [INSIDE[0]])), grpc.StatusCode.NOT_FOUND)
    rpc_fails(lambda: stub.Iterate(pb.IterateRequest(shard=ref, state="l", key=INSIDE[0])), grpc.StatusCode.NOT_FOUND)
    rpc_fails(lambda: stub.OpenShard(pb.OpenShardRequest(shard=ref, states=STATES)), grpc.StatusCode.NOT_FOUND)
    rpc_fails(lambda: stub.DeclareStates(pb.DeclareStatesRequest(shard=ref, states=STATES)), grpc.StatusCode.NOT_FOUND)
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace="no-such-namespace", max_key_groups=0)),
              grpc.StatusCode.NOT_FOUND)  # max_key_groups 0 looks a namespace up
    assert shard.contents() == before
    # ... and nothing was created on the way.
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace="no-such-namespace", max_key_groups=0)),
              grpc.StatusCode.NOT_FOUND)


def test_unknown_state(shard: SeededShard) -> None:
    before = shard.contents()
    stub = shard.stub
    rpc_fails(lambda: shard.write(shard.batch("nope", [WriteOp.PUT], [INSIDE[0]], [b"x"])),
              grpc.StatusCode.NOT_FOUND, "nope")
    rpc_fails(lambda: stub.ReadBatch(read_request(shard.ref, "nope", ReadOp.GET, [INSIDE[0]])), grpc.StatusCode.NOT_FOUND)
    rpc_fails(lambda: stub.Iterate(pb.IterateRequest(shard=shard.ref, state="nope", key=INSIDE[0])),
              grpc.StatusCode.NOT_FOUND)
    # One unknown state among known ones: nothing applies.
    request = shard.batch("v", [WriteOp.PUT, WriteOp.PUT], [INSIDE[0], INSIDE[1]], [b"new", b"new"])
    request.states.append("nope")
    request.state_indexes.extend([0, 1])
    rpc_fails(lambda: shard.write(request), grpc.StatusCode.NOT_FOUND)
    assert shard.contents() == before


def test_a_shard_that_is_not_open(shard: SeededShard) -> None:
    before = shard.contents()
    other = shard_ref(shard.namespace, (64, 127), EPOCH)
    error = rpc_fails(lambda: shard.stub.WriteBatch(write_request(other, "v", [WriteOp.PUT], [OUTSIDE], [b"x"])),
                      grpc.StatusCode.FAILED_PRECONDITION)
    assert rpc_error_reason(error) == "shard-not-open"
    assert shard.contents() == before


# -- key groups --------------------------------------------------------------------------------


def test_a_key_group_outside_the_shard(shard: SeededShard) -> None:
    before = shard.contents()
    stub = shard.stub
    # The bad key comes after good ones: the whole batch is refused.
    error = rpc_fails(lambda: shard.write(shard.batch("v", [WriteOp.PUT] * 3, [INSIDE[0], INSIDE[1], OUTSIDE],
                                                      [b"new"] * 3)), grpc.StatusCode.OUT_OF_RANGE, "key group")
    assert rpc_error_reason(error) == "key-group-out-of-range"
    rpc_fails(lambda: shard.write(shard.batch("l", [WriteOp.LIST_APPEND], [OUTSIDE], [b"x"])),
              grpc.StatusCode.OUT_OF_RANGE)
    rpc_fails(lambda: shard.write(shard.batch("s", [WriteOp.MERGE], [OUTSIDE], [merge_operators.encode_int64(1)])),
              grpc.StatusCode.OUT_OF_RANGE)
    rpc_fails(lambda: stub.ReadBatch(read_request(shard.ref, "v", ReadOp.GET, [INSIDE[0], OUTSIDE])),
              grpc.StatusCode.OUT_OF_RANGE)
    rpc_fails(lambda: stub.Iterate(pb.IterateRequest(shard=shard.ref, state="m", key=OUTSIDE)),
              grpc.StatusCode.OUT_OF_RANGE)
    assert shard.contents() == before


@pytest.mark.parametrize(("start", "end"), [(0, 128), (64, 63), (200, 300), (0, 1 << 20)])
def test_a_key_group_range_outside_the_namespace(shard: SeededShard, start: int, end: int) -> None:
    before = shard.contents()
    ref = shard_ref(shard.namespace, (start, end), EPOCH)
    rpc_fails(lambda: shard.stub.OpenShard(pb.OpenShardRequest(shard=ref, states=STATES)),
              grpc.StatusCode.INVALID_ARGUMENT)
    # Such a shard can never have been opened, so writes to it find no open shard.
    rpc_fails(lambda: shard.stub.WriteBatch(write_request(ref, "v", [WriteOp.PUT], [INSIDE[0]], [b"x"])),
              grpc.StatusCode.FAILED_PRECONDITION, "not open")
    assert shard.contents() == before


# -- sizes ---------------------------------------------------------------------------------------


def test_empty_keys(shard: SeededShard) -> None:
    before = shard.contents()
    stub = shard.stub
    rpc_fails(lambda: shard.write(shard.batch("v", [WriteOp.PUT] * 2, [INSIDE[0], b""], [b"new", b"new"])),
              grpc.StatusCode.INVALID_ARGUMENT, "empty")
    rpc_fails(lambda: shard.write(shard.batch("l", [WriteOp.LIST_APPEND], [b""], [b"x"])), grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: stub.ReadBatch(read_request(shard.ref, "v", ReadOp.GET, [b""])), grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: stub.Iterate(pb.IterateRequest(shard=shard.ref, state="m", key=b"")), grpc.StatusCode.INVALID_ARGUMENT)
    # An empty map key is refused too.
    rpc_fails(lambda: shard.write(shard.batch("m", [WriteOp.MAP_PUT], [INSIDE[0]], [b"x"], [b""])),
              grpc.StatusCode.INVALID_ARGUMENT, "map key")
    assert shard.contents() == before


def key_of_size(size: int) -> bytes:
    """A key of exactly ``size`` bytes in the test shard's key groups."""
    for i in range(10_000):
        key = f"{i:08d}".encode().rjust(size, b"k")
        if LOW[0] <= key_group_for(key, 128) <= LOW[1]:
            return key
    raise AssertionError("no key found")


def test_oversized_keys(shard: SeededShard) -> None:
    before = shard.contents()
    too_long = key_of_size(MAX_KEY_BYTES + 1)
    rpc_fails(lambda: shard.write(shard.batch("v", [WriteOp.PUT] * 2, [INSIDE[0], too_long], [b"new", b"new"])),
              grpc.StatusCode.INVALID_ARGUMENT, str(MAX_KEY_BYTES))
    rpc_fails(lambda: shard.stub.ReadBatch(read_request(shard.ref, "v", ReadOp.GET, [too_long])),
              grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: shard.write(shard.batch("m", [WriteOp.MAP_PUT], [INSIDE[0]], [b"x"], [b"m" * (MAX_KEY_BYTES + 1)])),
              grpc.StatusCode.INVALID_ARGUMENT, "map key")
    assert shard.contents() == before
    # The limit itself is allowed.
    longest = key_of_size(MAX_KEY_BYTES)
    shard.write(shard.batch("v", [WriteOp.PUT], [longest], [b"ok"]))
    assert read_values(shard.stub, read_request(shard.ref, "v", ReadOp.GET, [longest])) == [b"ok"]


@pytest.mark.timeout(60)
def test_oversized_values(shard: SeededShard) -> None:
    before = shard.contents()
    too_big = b"x" * (MAX_VALUE_BYTES + 1)
    rpc_fails(lambda: shard.write(shard.batch("v", [WriteOp.PUT] * 2, [INSIDE[0], INSIDE[1]], [b"new", too_big])),
              grpc.StatusCode.INVALID_ARGUMENT, str(MAX_VALUE_BYTES))
    rpc_fails(lambda: shard.write(shard.batch("l", [WriteOp.LIST_APPEND], [INSIDE[0]], [too_big])),
              grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: shard.write(shard.batch("m", [WriteOp.MAP_PUT], [INSIDE[0]], [too_big], [b"mk"])),
              grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: shard.write(shard.batch("h", [WriteOp.MERGE], [INSIDE[0]], [too_big])),
              grpc.StatusCode.INVALID_ARGUMENT)
    assert shard.contents() == before
    # The limit itself is allowed.
    largest = b"y" * MAX_VALUE_BYTES
    shard.write(shard.batch("v", [WriteOp.PUT], [INSIDE[2]], [largest]))
    assert read_values(shard.stub, read_request(shard.ref, "v", ReadOp.GET, [INSIDE[2]])) == [largest]


def test_oversized_batches(shard: SeededShard) -> None:
    before = shard.contents()
    count = MAX_BATCH_OPS + 1
    keys = [INSIDE[i % 3] for i in range(count)]
    rpc_fails(lambda: shard.write(shard.batch("v", [WriteOp.PUT] * count, keys, [b"new"] * count)),
              grpc.StatusCode.INVALID_ARGUMENT, str(MAX_BATCH_OPS))
    rpc_fails(lambda: shard.stub.ReadBatch(read_request(shard.ref, "v", ReadOp.GET, keys), timeout=30),
              grpc.StatusCode.INVALID_ARGUMENT, str(MAX_BATCH_OPS))
    assert shard.contents() == before
    # The limit itself is allowed, and applies in order: the last put of each key wins.
    count = MAX_BATCH_OPS
    keys = [INSIDE[i % 3] for i in range(count)]
    assert shard.write(shard.batch("v", [WriteOp.PUT] * count, keys, [b"%d" % i for i in range(count)])).applied == count
    assert shard.contents()["v"] == [b"%d" % (count - 3 + i) for i in (2, 0, 1)]


def test_a_message_larger_than_the_node_accepts(shard: SeededShard, node: NodeProcess) -> None:
    before = shard.contents()
    # Refused by gRPC before the node's code sees it; the raw channel itself allows 256 MiB.
    owner = node.worker_addresses[node.shard_worker(shard.namespace, LOW)]
    channel = grpc.insecure_channel(owner, options=[("grpc.max_send_message_length", 256 * MIB)])
    try:
        stub = state_pb2_grpc.StateServiceStub(channel)
        huge = [b"z" * (MAX_VALUE_BYTES - 1)] * 5  # each value is allowed; the message (80 MiB) is not
        request = write_request(shard.ref, "v", [WriteOp.PUT] * 5, [INSIDE[0]] * 5, huge)
        rpc_fails(lambda: stub.WriteBatch(request, timeout=60), grpc.StatusCode.RESOURCE_EXHAUSTED)
    finally:
        channel.close()
    assert shard.contents() == before


# -- names ---------------------------------------------------------------------------------------


def namespace_directories(node: NodeProcess) -> list[str]:
    """Every worker's namespace directories, relative to the node's data directory."""
    return sorted(str(p.relative_to(node.data_dir)) for data_dir in node.worker_data_dirs
                  for p in (data_dir / "namespaces").iterdir())


@pytest.mark.parametrize("name", MALFORMED_NAMES, ids=lambda name: f"{name[:8]!r}-{len(name)}")
def test_malformed_namespace_names(shard: SeededShard, node: NodeProcess, name: str) -> None:
    before = shard.contents()
    namespaces_before = namespace_directories(node)
    stub = shard.stub
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=name, max_key_groups=128)),
              grpc.StatusCode.INVALID_ARGUMENT, "namespace")
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=name, max_key_groups=0)),
              grpc.StatusCode.INVALID_ARGUMENT, "namespace")
    ref = shard_ref(name, LOW, EPOCH)
    rpc_fails(lambda: stub.OpenShard(pb.OpenShardRequest(shard=ref, states=STATES)), grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: stub.WriteBatch(write_request(ref, "v", [WriteOp.PUT], [INSIDE[0]], [b"x"])),
              grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: stub.ReadBatch(read_request(ref, "v", ReadOp.GET, [INSIDE[0]])), grpc.StatusCode.INVALID_ARGUMENT)
    # Nothing was created on disk, in particular no directory outside the data directory.
    assert namespace_directories(node) == namespaces_before
    assert sorted(p.name for p in node.data_dir.parent.iterdir() if p.is_dir()) == [node.data_dir.name]
    assert shard.contents() == before


def test_names_of_up_to_128_characters(shard: SeededShard) -> None:
    stub = shard.stub
    longest = "n" * 127 + "9"
    assert stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=longest, max_key_groups=8)).created
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=longest + "9", max_key_groups=8)),
              grpc.StatusCode.INVALID_ARGUMENT, "128")
    stub.DeclareStates(pb.DeclareStatesRequest(shard=shard.ref, states=[pb.StateDescriptor(name="S_.-9" * 25 + "abc",
                                                                                             kind=pb.STATE_KIND_VALUE)]))
    rpc_fails(lambda: stub.DeclareStates(pb.DeclareStatesRequest(shard=shard.ref, states=[pb.StateDescriptor(
        name="s" * 129, kind=pb.STATE_KIND_VALUE)])), grpc.StatusCode.INVALID_ARGUMENT, "128")


@pytest.mark.parametrize("name", MALFORMED_NAMES, ids=lambda name: f"{name[:8]!r}-{len(name)}")
def test_malformed_state_names(shard: SeededShard, name: str) -> None:
    before = shard.contents()
    stub = shard.stub
    bad = pb.StateDescriptor(name=name, kind=pb.STATE_KIND_VALUE)
    rpc_fails(lambda: stub.DeclareStates(pb.DeclareStatesRequest(shard=shard.ref, states=[bad])),
              grpc.StatusCode.INVALID_ARGUMENT, "state")
    # A good state declared with a bad one is not declared either.
    good = pb.StateDescriptor(name="declared-with-a-bad-one", kind=pb.STATE_KIND_VALUE)
    rpc_fails(lambda: stub.DeclareStates(pb.DeclareStatesRequest(shard=shard.ref, states=[good, bad])),
              grpc.StatusCode.INVALID_ARGUMENT)
    rpc_fails(lambda: stub.OpenShard(pb.OpenShardRequest(shard=shard.ref, states=[*STATES, bad])),
              grpc.StatusCode.INVALID_ARGUMENT)
    # A batch naming a malformed state: malformed, not merely unknown (as for namespaces).
    rpc_fails(lambda: shard.write(shard.batch(name, [WriteOp.PUT], [INSIDE[0]], [b"x"])),
              grpc.StatusCode.INVALID_ARGUMENT, "state")
    rpc_fails(lambda: stub.ReadBatch(read_request(shard.ref, name, ReadOp.GET, [INSIDE[0]])),
              grpc.StatusCode.INVALID_ARGUMENT, "state")
    rpc_fails(lambda: stub.Iterate(pb.IterateRequest(shard=shard.ref, state=name, key=INSIDE[0])),
              grpc.StatusCode.INVALID_ARGUMENT, "state")
    reopened = stub.OpenShard(pb.OpenShardRequest(shard=shard.ref), timeout=10)
    assert sorted(s.name for s in reopened.states) == sorted(s.name for s in STATES)
    assert shard.contents() == before


def test_bad_state_descriptors(shard: SeededShard) -> None:
    before = shard.contents()
    stub = shard.stub
    for bad in [
        pb.StateDescriptor(name="x", kind=pb.STATE_KIND_UNSPECIFIED),
        pb.StateDescriptor(name="x", kind=99),  # type: ignore[arg-type]
        pb.StateDescriptor(name="x", kind=pb.STATE_KIND_AGGREGATING),  # no merge operator
        pb.StateDescriptor(name="x", kind=pb.STATE_KIND_AGGREGATING, merge_operator="no_such_operator"),
        pb.StateDescriptor(name="x", kind=pb.STATE_KIND_VALUE, merge_operator="sum_int64"),
        # Long fields must not be echoed whole into the error: a reply's metadata is limited to 8 KiB.
        pb.StateDescriptor(name="x", kind=pb.STATE_KIND_AGGREGATING, merge_operator="o" * 10_000),
        pb.StateDescriptor(name="x" * 10_000, kind=pb.STATE_KIND_UNSPECIFIED),
    ]:
        rpc_fails(lambda: stub.DeclareStates(pb.DeclareStatesRequest(shard=shard.ref, states=[bad])),
                  grpc.StatusCode.INVALID_ARGUMENT)
    reopened = stub.OpenShard(pb.OpenShardRequest(shard=shard.ref), timeout=10)
    assert "x" not in {s.name for s in reopened.states}
    assert shard.contents() == before


# -- conflicting declarations --------------------------------------------------------------------


@pytest.mark.parametrize("redeclared", [
    pb.StateDescriptor(name="v", kind=pb.STATE_KIND_LIST),
    pb.StateDescriptor(name="l", kind=pb.STATE_KIND_MAP),
    pb.StateDescriptor(name="m", kind=pb.STATE_KIND_VALUE),
    pb.StateDescriptor(name="s", kind=pb.STATE_KIND_VALUE),
    pb.StateDescriptor(name="s", kind=pb.STATE_KIND_AGGREGATING, merge_operator="max_int64"),
], ids=lambda d: f"{d.name}-as-{pb.StateKind.Name(d.kind)}-{d.merge_operator}")
def test_a_state_redeclared_with_another_kind(shard: SeededShard, redeclared: pb.StateDescriptor) -> None:
    before = shard.contents()
    stub = shard.stub
    rpc_fails(lambda: stub.DeclareStates(pb.DeclareStatesRequest(shard=shard.ref, states=[redeclared])),
              grpc.StatusCode.ALREADY_EXISTS, redeclared.name)
    rpc_fails(lambda: stub.OpenShard(pb.OpenShardRequest(shard=shard.ref, states=[redeclared])),
              grpc.StatusCode.ALREADY_EXISTS)
    assert shard.contents() == before
    # The state keeps its kind: a write of the old kind still applies.
    reopened = stub.OpenShard(pb.OpenShardRequest(shard=shard.ref), timeout=10)
    assert {s.name: (s.kind, s.merge_operator) for s in reopened.states} == {
        s.name: (s.kind, s.merge_operator) for s in STATES
    }


def test_a_namespace_recreated_with_other_key_groups(shard: SeededShard) -> None:
    before = shard.contents()
    stub = shard.stub
    again = stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=shard.namespace, max_key_groups=128))
    assert (again.created, again.max_key_groups) == (False, 128)  # the same parameters: fine
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=shard.namespace, max_key_groups=256)),
              grpc.StatusCode.ALREADY_EXISTS, "128")
    looked_up = stub.CreateNamespace(pb.CreateNamespaceRequest(namespace=shard.namespace, max_key_groups=0))
    assert looked_up.max_key_groups == 128
    assert shard.contents() == before


@pytest.mark.parametrize("max_key_groups", [65_537, 1 << 31])
def test_a_namespace_with_too_many_key_groups(stub: state_pb2_grpc.StateServiceStub, max_key_groups: int) -> None:
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace="too-many-groups",
                                                                     max_key_groups=max_key_groups)),
              grpc.StatusCode.INVALID_ARGUMENT, "max_key_groups")
    rpc_fails(lambda: stub.CreateNamespace(pb.CreateNamespaceRequest(namespace="too-many-groups", max_key_groups=0)),
              grpc.StatusCode.NOT_FOUND)


# -- malformed packed fields ---------------------------------------------------------------------


def _good(shard: SeededShard) -> pb.WriteBatchRequest:
    """Three puts of new values: applied, they would change the shard's contents."""
    return shard.batch("v", [WriteOp.PUT] * 3, INSIDE, [b"new0", b"new1", b"new2"])


def _break(shard: SeededShard, change: Callable[[pb.WriteBatchRequest], None]) -> pb.WriteBatchRequest:
    request = _good(shard)
    change(request)
    return request


def _set(field: str, value: Any) -> Callable[[pb.WriteBatchRequest], None]:
    def change(request: pb.WriteBatchRequest) -> None:
        if isinstance(value, list):
            request.ClearField(field)  # type: ignore[arg-type]
            getattr(request, field).extend(value)
        else:
            setattr(request, field, value)
    return change


K0, K1, K2 = (len(k) for k in INSIDE)
# What to break in a good batch of three puts, and a word the error message must contain.
MALFORMED_BATCHES: dict[str, tuple[Callable[[pb.WriteBatchRequest], None], str]] = {
    "key lengths add up to more than the keys": (_set("key_lengths", [K0, K1, K2 + 1]), "add up"),
    "key lengths add up to less than the keys": (_set("key_lengths", [K0, K1, K2 - 1]), "add up"),
    "value lengths do not add up": (_set("value_lengths", [4, 4, 5]), "add up"),
    "a length far past the blob": (_set("key_lengths", [K0, K1, (1 << 32) - 1]), "add up"),
    "map key lengths without map keys": (_set("map_key_lengths", [1, 1, 1]), "add up"),
    "fewer keys than operations": (_set("key_lengths", [K0, K1 + K2]), "keys has 2 entries for 3"),
    "more operations than keys": (_set("ops", bytes([WriteOp.PUT] * 4)), "keys has 3 entries for 4"),
    "fewer values than operations": (_set("value_lengths", [4, 8]), "values has 2 entries for 3"),
    "more values than operations": (_set("value_lengths", [4, 4, 4, 0]), "values has 4 entries for 3"),
    "PUT without a value": (_set("value_lengths", []), "needs a value"),
    "no operations": (_set("ops", b""), "no operations"),
    "no states": (_set("states", []), "no state"),
    "too few state indexes": (_set("state_indexes", [0, 0]), "state_indexes has 2 entries for 3"),
    "a state index past the states": (_set("state_indexes", [0, 0, 1]), "state index"),
    "an unknown operation": (_set("ops", bytes([WriteOp.PUT, WriteOp.PUT, 99])), "unknown operation 99"),
    "operation 0": (_set("ops", bytes([WriteOp.PUT, WriteOp.PUT, 0])), "unknown operation 0"),
    "MERGE on a value state": (_set("ops", bytes([WriteOp.PUT, WriteOp.PUT, WriteOp.MERGE])), "does not apply"),
    "LIST_APPEND on a value state": (_set("ops", bytes([WriteOp.PUT, WriteOp.PUT, WriteOp.LIST_APPEND])),
                                     "does not apply"),
    "MAP_PUT on a value state": (_set("ops", bytes([WriteOp.PUT, WriteOp.PUT, WriteOp.MAP_PUT])), "does not apply"),
}


@pytest.mark.parametrize("breakage", list(MALFORMED_BATCHES), ids=str)
def test_malformed_packed_write_batches(shard: SeededShard, breakage: str) -> None:
    before = shard.contents()
    change, match = MALFORMED_BATCHES[breakage]
    request = _break(shard, change)
    if breakage == "PUT without a value":
        request.values = b""
    rpc_fails(lambda: shard.write(request), grpc.StatusCode.INVALID_ARGUMENT, match)
    assert shard.contents() == before


def test_the_unbroken_batch_would_apply(shard: SeededShard) -> None:
    # So that the malformed-batch tests above fail for the breakage, not for the batch.
    shard.write(_good(shard))
    assert shard.contents()["v"] == [b"new0", b"new1", b"new2"]


OPS_NOT_FOR_THE_KIND = [
    ("v", WriteOp.MERGE, b"\x01" * 8, None),
    ("v", WriteOp.LIST_APPEND, b"x", None),
    ("v", WriteOp.MAP_REMOVE, None, b"mk"),
    ("l", WriteOp.PUT, b"x", None),
    ("l", WriteOp.DELETE, None, None),
    ("l", WriteOp.MAP_PUT, b"x", b"mk"),
    ("m", WriteOp.PUT, b"x", None),
    ("m", WriteOp.LIST_APPEND, b"x", None),
    ("m", WriteOp.MERGE, b"x", None),
    ("s", WriteOp.PUT, b"\x01" * 8, None),
    ("s", WriteOp.LIST_APPEND, b"\x01" * 8, None),
    ("h", WriteOp.MAP_PUT, b"x", b"mk"),
]


@pytest.mark.parametrize(("state", "op", "value", "map_key"), OPS_NOT_FOR_THE_KIND,
                         ids=[f"{WriteOp(o).name}-on-{s}" for s, o, _, _ in OPS_NOT_FOR_THE_KIND])
def test_operations_that_do_not_apply_to_the_state_kind(shard: SeededShard, state: str, op: WriteOp,
                                                        value: bytes | None, map_key: bytes | None) -> None:
    before = shard.contents()
    # A good first operation on the same state, then the bad one: neither applies.
    good_op, good_value, good_map_key = {
        "v": (WriteOp.PUT, b"new", b""), "l": (WriteOp.LIST_APPEND, b"new", b""), "m": (WriteOp.MAP_PUT, b"new", b"new"),
        "s": (WriteOp.MERGE, merge_operators.encode_int64(1), b""), "h": (WriteOp.MERGE, b"new", b""),
    }[state]
    request = shard.batch(state, [good_op, op], [INSIDE[0], INSIDE[1]], [good_value, value or b""],
                          [good_map_key, map_key or b""] if good_map_key or map_key else None)
    rpc_fails(lambda: shard.write(request), grpc.StatusCode.INVALID_ARGUMENT, "does not apply")
    assert shard.contents() == before


@pytest.mark.parametrize("state", ["s", "max", "min"])
@pytest.mark.parametrize("operand", [b"", b"\x01" * 7, b"\x01" * 9, b"12"], ids=lambda o: f"{len(o)}-bytes")
def test_int64_merge_operands_that_are_not_int64(shard: SeededShard, state: str, operand: bytes) -> None:
    if state != "s":
        shard.stub.DeclareStates(pb.DeclareStatesRequest(shard=shard.ref, states=[
            pb.StateDescriptor(name=state, kind=pb.STATE_KIND_AGGREGATING, merge_operator=f"{state}_int64")]))
    before = shard.contents()
    request = shard.batch(state, [WriteOp.MERGE] * 2, [INSIDE[0], INSIDE[0]], [merge_operators.encode_int64(1), operand])
    rpc_fails(lambda: shard.write(request), grpc.StatusCode.INVALID_ARGUMENT, "int64")
    assert shard.contents() == before
    if state != "s":
        assert read_values(shard.stub, read_request(shard.ref, state, ReadOp.GET, [INSIDE[0]])) == [None]


MALFORMED_READS: dict[str, Callable[[pb.ReadBatchRequest], None]] = {
    "key lengths do not add up": lambda r: r.key_lengths.__setitem__(0, r.key_lengths[0] + 1),
    "an unknown read operation": lambda r: setattr(r, "ops", bytes([ReadOp.GET, 77, ReadOp.GET])),
    "read operation 0": lambda r: setattr(r, "ops", bytes([ReadOp.GET, 0, ReadOp.GET])),
    "GET_LIST on a value state": lambda r: setattr(r, "ops", bytes([ReadOp.GET, ReadOp.GET_LIST, ReadOp.GET])),
    "MAP_GET on a value state": lambda r: setattr(r, "ops", bytes([ReadOp.GET, ReadOp.MAP_GET, ReadOp.GET])),
    "more operations than keys": lambda r: setattr(r, "ops", bytes([ReadOp.GET] * 4)),
    "no reads": lambda r: setattr(r, "ops", b""),
    "too few state indexes": lambda r: r.state_indexes.extend([0]),
    "a state index past the states": lambda r: r.state_indexes.extend([0, 0, 3]),
    "map keys that do not match the reads": lambda r: r.MergeFrom(pb.ReadBatchRequest(map_keys=b"x", map_key_lengths=[1])),
}


@pytest.mark.parametrize("breakage", list(MALFORMED_READS), ids=str)
def test_malformed_read_batches(shard: SeededShard, breakage: str) -> None:
    request = read_request(shard.ref, "v", ReadOp.GET, INSIDE)
    MALFORMED_READS[breakage](request)
    rpc_fails(lambda: shard.stub.ReadBatch(request), grpc.StatusCode.INVALID_ARGUMENT)


def test_map_reads_need_a_map_key(shard: SeededShard) -> None:
    rpc_fails(lambda: shard.stub.ReadBatch(read_request(shard.ref, "m", ReadOp.MAP_GET, [INSIDE[0]])),
              grpc.StatusCode.INVALID_ARGUMENT, "map key")


@pytest.mark.parametrize(("state", "limit"), [("v", 10), ("s", 10), ("m", 10_001), ("l", 1 << 31)])
def test_bad_iterations(shard: SeededShard, state: str, limit: int) -> None:
    rpc_fails(lambda: shard.stub.Iterate(pb.IterateRequest(shard=shard.ref, state=state, key=INSIDE[0], limit=limit)),
              grpc.StatusCode.INVALID_ARGUMENT)


# -- atomicity -----------------------------------------------------------------------------------


def _mixed_batch(shard: SeededShard, bad: tuple[str, int, bytes, bytes, bytes] | None) -> pb.WriteBatchRequest:
    """Good operations on every state, then (optionally) one bad operation, in one batch."""
    k0, k1, k2 = INSIDE
    operations: list[tuple[str, int, bytes, bytes, bytes]] = [
        ("v", WriteOp.PUT, k0, b"new", b""), ("v", WriteOp.DELETE, k1, b"", b""),
        ("l", WriteOp.LIST_APPEND, k0, b"new", b""), ("l", WriteOp.CLEAR, k1, b"", b""),
        ("m", WriteOp.MAP_PUT, k1, b"new", b"mk1"), ("m", WriteOp.MAP_REMOVE, k0, b"", b"mk0"),
        ("m", WriteOp.CLEAR, k2, b"", b""),
        ("s", WriteOp.MERGE, k0, merge_operators.encode_int64(100), b""), ("s", WriteOp.MERGE, k1, merge_operators.encode_int64(1), b""),
        ("h", WriteOp.MERGE, k1, b"new", b""), ("h", WriteOp.DELETE, k0, b"", b""),
    ]
    if bad is not None:
        operations.append(bad)
    names = [s.name for s in STATES]
    keys, lengths = wire.pack([o[2] for o in operations])
    values, value_lengths = wire.pack([o[3] for o in operations])
    map_keys, map_key_lengths = wire.pack([o[4] for o in operations])
    return pb.WriteBatchRequest(
        shard=shard.ref, states=names, ops=bytes(o[1] for o in operations),
        state_indexes=[names.index(o[0]) for o in operations], keys=keys, key_lengths=lengths,
        values=values, value_lengths=value_lengths, map_keys=map_keys, map_key_lengths=map_key_lengths,
    )


BAD_LAST_OPERATIONS = {
    "a key outside the shard": (("v", WriteOp.PUT, OUTSIDE, b"x", b""), grpc.StatusCode.OUT_OF_RANGE),
    "an empty key": (("v", WriteOp.PUT, b"", b"x", b""), grpc.StatusCode.INVALID_ARGUMENT),
    "an oversized value": (("l", WriteOp.LIST_APPEND, INSIDE[2], b"x" * (MAX_VALUE_BYTES + 1), b""),
                           grpc.StatusCode.INVALID_ARGUMENT),
    "a bad operand": (("s", WriteOp.MERGE, INSIDE[2], b"bad", b""), grpc.StatusCode.INVALID_ARGUMENT),
    "an operation of another kind": (("m", WriteOp.PUT, INSIDE[2], b"x", b""), grpc.StatusCode.INVALID_ARGUMENT),
    "an unknown operation": (("v", 42, INSIDE[2], b"x", b""), grpc.StatusCode.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("bad", list(BAD_LAST_OPERATIONS), ids=str)
def test_one_bad_operation_among_good_ones_applies_none(shard: SeededShard, bad: str) -> None:
    before = shard.contents()
    operation, code = BAD_LAST_OPERATIONS[bad]
    rpc_fails(lambda: shard.write(_mixed_batch(shard, operation)), code)  # type: ignore[arg-type]
    assert shard.contents() == before


def test_the_mixed_batch_applies_without_the_bad_operation(shard: SeededShard) -> None:
    # The control for the test above: the same good operations do change the state.
    shard.write(_mixed_batch(shard, None))
    contents = shard.contents()
    assert contents["v"] == [b"new", None, b"v2"]
    assert contents["l"] == [wire.pack_list([b"a", b"b", b"new"]), None, None]
    assert contents["m"] == [[], [(b"mk1", b"new")], []]
    assert contents["s"] == [merge_operators.encode_int64(110), merge_operators.encode_int64(1), None]
    assert contents["h"] == [None, wire.pack_list([b"e", b"new"]), None]


@pytest.mark.timeout(60)
def test_reads_whose_values_do_not_fit_into_one_reply(shard: SeededShard) -> None:
    big = [bytes([65 + i]) * (13 * MIB) for i in range(4)]  # 52 MiB together: more than a reply holds
    keys = keys_in_key_groups(4, 128, *LOW, prefix="big")
    for key, value in zip(keys, big):
        shard.write(shard.batch("v", [WriteOp.PUT], [key.encode()], [value]))
    raw_keys = [k.encode() for k in keys]
    # A clear, final error (not RESOURCE_EXHAUSTED, which clients take for a transient one) ...
    error = rpc_fails(lambda: shard.stub.ReadBatch(read_request(shard.ref, "v", ReadOp.GET, raw_keys), timeout=30),
                      grpc.StatusCode.INVALID_ARGUMENT, "read fewer keys")
    assert rpc_error_reason(error) == "reply-too-large"
    # ... and fewer keys at once do fit.
    assert read_values(shard.stub, read_request(shard.ref, "v", ReadOp.GET, raw_keys[:3])) == big[:3]

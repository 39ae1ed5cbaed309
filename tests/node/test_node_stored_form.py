"""Batches in stored form (keys with their key-group prefix, values with their header byte),
hand-built and sent over real gRPC: the node checks them as strictly as the plain form.

Every refusal leaves the shard as it was (invariant 7) and fails nothing else; the plain form
is still accepted next to it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
import pytest

from stateserver.protocol import merge_operators, stored_form, wire
from stateserver.protocol.keygroups import key_group_for, key_group_prefix
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import keys_in_key_groups, read_request, read_values, rpc_error_reason, shard_ref

MAX_KEY_GROUPS = 128
LOW = (0, 63)
INSIDE = [k.encode() for k in keys_in_key_groups(4, MAX_KEY_GROUPS, *LOW)]
OUTSIDE = keys_in_key_groups(1, MAX_KEY_GROUPS, 64, 127)[0].encode()
STATES = [
    pb.StateDescriptor(name="v", kind=pb.STATE_KIND_VALUE),
    pb.StateDescriptor(name="t", kind=pb.STATE_KIND_VALUE, ttl_ms=3_600_000),
    pb.StateDescriptor(name="s", kind=pb.STATE_KIND_AGGREGATING, merge_operator="sum_int64"),
    pb.StateDescriptor(name="l", kind=pb.STATE_KIND_LIST),
    pb.StateDescriptor(name="m", kind=pb.STATE_KIND_MAP),
]


def stored(key: bytes) -> bytes:
    return key_group_prefix(key_group_for(key, MAX_KEY_GROUPS)) + key


def stored_write(ref: pb.ShardRef, state: str, ops: Sequence[int], keys: Sequence[bytes],
                 values: Sequence[bytes] | None = None, map_keys: Sequence[bytes] | None = None, *,
                 raw: bool = False) -> pb.WriteBatchRequest:
    """A stored-form batch; ``raw``: keys and values as given (already stored, or broken)."""
    if raw:
        key_blob, key_lengths = wire.pack(list(keys))
        value_blob, value_lengths = wire.pack(list(values or []))
    else:
        key_blob, key_lengths = stored_form.stored_keys(keys, MAX_KEY_GROUPS)
        value_blob, value_lengths = stored_form.stored_values(values or [b""] * len(keys))
    request = pb.WriteBatchRequest(shard=ref, states=[state], ops=bytes(ops), keys=key_blob, key_lengths=key_lengths,
                                   values=value_blob, value_lengths=value_lengths, stored_form=True)
    if map_keys is not None:
        request.map_keys, lengths = wire.pack(list(map_keys))
        request.map_key_lengths.extend(lengths)
    return request


def stored_read(ref: pb.ShardRef, state: str, op: int, keys: Sequence[bytes], map_keys: Sequence[bytes] | None = None,
                *, raw: bool = False) -> pb.ReadBatchRequest:
    key_blob, key_lengths = wire.pack(list(keys)) if raw else stored_form.stored_keys(keys, MAX_KEY_GROUPS)
    request = pb.ReadBatchRequest(shard=ref, states=[state], ops=bytes([op]) * len(keys), keys=key_blob,
                                  key_lengths=key_lengths, stored_form=True)
    if map_keys is not None:
        request.map_keys, lengths = wire.pack(list(map_keys))
        request.map_key_lengths.extend(lengths)
    return request


@pytest.fixture
def ref(stub: state_pb2_grpc.StateServiceStub, namespace: str) -> pb.ShardRef:
    shard = shard_ref(namespace, LOW, 1)
    stub.OpenShard(pb.OpenShardRequest(shard=shard, states=STATES), timeout=10)
    return shard


def plain_contents(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> list[list[bytes | None]]:
    """What the shard stores for the test keys, read in the plain form."""
    return [read_values(stub, read_request(ref, "v", ReadOp.GET, INSIDE)),
            read_values(stub, read_request(ref, "s", ReadOp.GET, INSIDE)),
            read_values(stub, read_request(ref, "l", ReadOp.GET_LIST, INSIDE))]


def fails(call: Callable[[], object], code: grpc.StatusCode, match: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"{error.code()} {error.details()}"  # type: ignore[attr-defined]
    assert match.lower() in error.details().lower(), error.details()  # type: ignore[attr-defined]
    return error


def test_the_node_says_it_takes_stored_form(stub: state_pb2_grpc.StateServiceStub) -> None:
    assert stub.NodeInfo(pb.NodeInfoRequest(), timeout=10).limits.stored_form


def test_stored_form_writes_read_back_in_both_forms(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    k0, k1, k2, k3 = INSIDE
    seven = merge_operators.encode_int64(7)
    for request in [
        stored_write(ref, "v", [WriteOp.PUT] * 3, [k0, k1, k2], [b"a", b"", b"c"]),
        stored_write(ref, "v", [WriteOp.PUT, WriteOp.DELETE], [k0, k2], [b"a2", b""]),
        stored_write(ref, "t", [WriteOp.PUT], [k3], [b"ttl"]),
        stored_write(ref, "s", [WriteOp.MERGE] * 3, [k0, k0, k1], [seven] * 3),
        stored_write(ref, "l", [WriteOp.LIST_APPEND] * 2, [k1, k1], [b"x", b"y"]),
        stored_write(ref, "m", [WriteOp.MAP_PUT], [k2], [b"mv"], [b"mk"]),
    ]:
        assert stub.WriteBatch(request, timeout=10).applied == len(request.ops)
    expected_values = [b"a2", b"", None, None]
    assert plain_contents(stub, ref) == [expected_values, [merge_operators.encode_int64(14), seven, None, None],
                                         [None, wire.pack_list([b"x", b"y"]), None, None]]
    # Stored-form reads: each value behind its header (an absent one the header alone), flagged.
    reply = stub.ReadBatch(stored_read(ref, "v", ReadOp.GET, INSIDE), timeout=10)
    assert reply.stored_form and reply.found == b"\x01\x01\x00\x00"
    assert wire.unpack(reply.values, reply.value_lengths) == [b"\x00a2", b"\x00", b"\x00", b"\x00"]
    assert stored_form.plain_values(reply.values, reply.value_lengths)[:2] == [b"a2", b""]
    # The other paths (TTL state, aggregates, lists, maps) answer in stored form too.
    for state, op, map_keys, want in [
        ("t", ReadOp.GET, None, [None, None, None, b"ttl"]),
        ("s", ReadOp.GET, None, [merge_operators.encode_int64(14), seven, None, None]),
        ("l", ReadOp.GET_LIST, None, [None, wire.pack_list([b"x", b"y"]), None, None]),
        ("m", ReadOp.MAP_GET, [b"mk"] * 4, [None, None, b"mv", None]),
    ]:
        reply = stub.ReadBatch(stored_read(ref, state, op, INSIDE, map_keys), timeout=10)
        values = stored_form.plain_values(reply.values, reply.value_lengths)
        assert reply.stored_form
        assert [v if found else None for v, found in zip(values, reply.found)] == want, state


def test_a_stored_key_outside_the_shard_is_refused(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    """The key group comes from the prefix now: a prefix outside the shard is refused as before,
    whether the key hashes there too or only its prefix says so, in writes and reads alike."""
    stub.WriteBatch(stored_write(ref, "v", [WriteOp.PUT], [INSIDE[0]], [b"before"]), timeout=10)
    before = plain_contents(stub, ref)
    forged = key_group_prefix(100) + INSIDE[1]  # hashes inside, prefix outside
    beyond = key_group_prefix(MAX_KEY_GROUPS + 5) + INSIDE[1]  # not a key group of the namespace at all
    for bad in (stored(OUTSIDE), forged, beyond):
        keys = [stored(INSIDE[0]), stored(INSIDE[1]), bad]  # the bad key after good ones: nothing applies
        error = fails(lambda: stub.WriteBatch(stored_write(ref, "v", [WriteOp.PUT] * 3, keys, [b"\x00new"] * 3,
                                                           raw=True), timeout=10),
                      grpc.StatusCode.OUT_OF_RANGE, "key group")
        assert rpc_error_reason(error) == "key-group-out-of-range"
        fails(lambda: stub.WriteBatch(stored_write(ref, "s", [WriteOp.MERGE], [bad],
                                                   [b"\x00" + merge_operators.encode_int64(1)], raw=True), timeout=10),
              grpc.StatusCode.OUT_OF_RANGE, "key group")
        fails(lambda: stub.ReadBatch(stored_read(ref, "v", ReadOp.GET, [stored(INSIDE[0]), bad], raw=True),
                                     timeout=10), grpc.StatusCode.OUT_OF_RANGE, "key group")
    # A write of a key that hashes outside the shard under a prefix inside it: refused as outside too.
    smuggled = key_group_prefix(LOW[0]) + OUTSIDE
    for state, op, value in (("v", WriteOp.PUT, b"\x00new"), ("s", WriteOp.MERGE, b"\x00" + merge_operators.encode_int64(1))):
        error = fails(lambda: stub.WriteBatch(stored_write(ref, state, [op] * 2, [stored(INSIDE[0]), smuggled],
                                                           [value] * 2, raw=True), timeout=10),
                      grpc.StatusCode.OUT_OF_RANGE, "key group")
        assert rpc_error_reason(error) == "key-group-out-of-range"
    assert plain_contents(stub, ref) == before


@pytest.mark.parametrize(("breakage", "code", "match"), [
    ("prefix only", grpc.StatusCode.INVALID_ARGUMENT, "prefix"),
    ("one byte key", grpc.StatusCode.INVALID_ARGUMENT, "prefix"),
    ("value without header", grpc.StatusCode.INVALID_ARGUMENT, "head"),
    ("unknown header", grpc.StatusCode.INVALID_ARGUMENT, "header 0x07"),
    ("expiring header", grpc.StatusCode.INVALID_ARGUMENT, "header 0x01"),
    ("too few values", grpc.StatusCode.INVALID_ARGUMENT, "values"),
    ("no values", grpc.StatusCode.INVALID_ARGUMENT, "every operation"),
    ("lengths do not add up", grpc.StatusCode.INVALID_ARGUMENT, "add up"),
    ("prefix of another key group", grpc.StatusCode.INVALID_ARGUMENT, "hashes to"),
    # Failed before the fast path checked hashes: the put landed under the forged key group, where
    # a rescaling restore would later file it in another shard than the one its reads go to.
    ("put under another key group of the shard", grpc.StatusCode.INVALID_ARGUMENT, "hashes to"),
])
def test_malformed_stored_form_batches(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef, breakage: str,
                                       code: grpc.StatusCode, match: str) -> None:
    stub.WriteBatch(stored_write(ref, "v", [WriteOp.PUT], [INSIDE[0]], [b"before"]), timeout=10)
    before = plain_contents(stub, ref)
    keys, values, state, op = [stored(INSIDE[0]), stored(INSIDE[1])], [b"\x00one", b"\x00two"], "v", WriteOp.PUT
    if breakage == "prefix only":
        keys[1] = keys[1][:2]
    elif breakage == "one byte key":
        keys[1] = b"\x00"
    elif breakage == "value without header":
        values[1] = b""
    elif breakage == "unknown header":
        values[1] = b"\x07two"
    elif breakage == "expiring header":
        values[1] = b"\x01" + (2**62).to_bytes(8, "big") + b"two"
    elif breakage == "too few values":
        values = values[:1]
    elif breakage == "no values":
        values = []
    elif breakage == "prefix of another key group":
        # Inside the shard but not the key's hash: checked where the node strips the prefixes.
        other = next(g for g in range(*LOW) if g != key_group_for(INSIDE[1], MAX_KEY_GROUPS))
        keys[1] = key_group_prefix(other) + INSIDE[1]
        state, op, values = "s", WriteOp.MERGE, [b"\x00" + merge_operators.encode_int64(1)] * 2
    elif breakage == "put under another key group of the shard":
        other = next(g for g in range(*LOW) if g != key_group_for(INSIDE[1], MAX_KEY_GROUPS))
        keys[1] = key_group_prefix(other) + INSIDE[1]
    request = stored_write(ref, state, [op] * 2, keys, values, raw=True)
    if breakage == "lengths do not add up":
        request.keys += b"x"
    fails(lambda: stub.WriteBatch(request, timeout=10), code, match)
    assert plain_contents(stub, ref) == before


def test_the_plain_form_is_still_taken_next_to_it(stub: state_pb2_grpc.StateServiceStub, ref: pb.ShardRef) -> None:
    plain_keys, key_lengths = wire.pack(INSIDE[:2])
    values, value_lengths = wire.pack([b"p0", b"p1"])
    stub.WriteBatch(pb.WriteBatchRequest(shard=ref, states=["v"], ops=bytes([WriteOp.PUT] * 2), keys=plain_keys,
                                         key_lengths=key_lengths, values=values, value_lengths=value_lengths),
                    timeout=10)
    reply = stub.ReadBatch(stored_read(ref, "v", ReadOp.GET, INSIDE[:2]), timeout=10)
    assert stored_form.plain_values(reply.values, reply.value_lengths) == [b"p0", b"p1"]
    assert read_values(stub, read_request(ref, "v", ReadOp.GET, INSIDE[:2])) == [b"p0", b"p1"]

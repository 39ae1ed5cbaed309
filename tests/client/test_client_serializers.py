"""Serializers: bytes, str, int64, JSON and a custom one, checked against the bytes the node stores."""
from __future__ import annotations

import dataclasses

import pytest

from stateserver.client import (
    BYTES, INT64, JSON, STR, BytesSerializer, Int64Serializer, InvalidArgumentError, JsonSerializer, StrSerializer, Writer,
)
from stateserver.protocol.keygroups import key_group_for
from stateserver.protocol.operations import ReadOp
from stateserver.protocol.v1 import state_pb2_grpc
from support.node import read_request, read_values, shard_ref


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class PointSerializer:
    """A custom serializer: ``x,y`` in ASCII."""

    def dumps(self, obj: Point) -> bytes:
        return f"{obj.x},{obj.y}".encode()

    def loads(self, data: bytes) -> Point:
        x, y = data.decode().split(",")
        return Point(int(x), int(y))


def stored(stub: state_pb2_grpc.StateServiceStub, writer: Writer, state: str, raw_key: bytes) -> bytes | None:
    ref = shard_ref(writer.namespace, (0, writer.max_key_groups - 1), writer.epoch)
    return read_values(stub, read_request(ref, state, ReadOp.GET, [raw_key]))[0]


def test_serializers_give_the_documented_bytes() -> None:
    assert isinstance(BYTES, BytesSerializer) and isinstance(STR, StrSerializer)
    assert isinstance(INT64, Int64Serializer) and isinstance(JSON, JsonSerializer)
    assert BYTES.dumps(bytearray(b"\x00a")) == b"\x00a" and BYTES.loads(b"\x00a") == b"\x00a"  # type: ignore[arg-type]
    assert STR.dumps("grüße") == "grüße".encode() and STR.loads("grüße".encode()) == "grüße"
    assert INT64.dumps(-2) == b"\xfe" + b"\xff" * 7 and INT64.loads(b"\xfe" + b"\xff" * 7) == -2
    # Equal objects give equal bytes (key serializers must be deterministic).
    assert JSON.dumps({"b": 1, "a": [1, 2]}) == JSON.dumps({"a": [1, 2], "b": 1}) == b'{"a":[1,2],"b":1}'
    assert JSON.loads(b'{"a":[1,2],"b":1}') == {"a": [1, 2], "b": 1}


def test_bytes_keys_and_values(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    state = writer.value_state("raw", key_serializer=BYTES, value_serializer=BYTES)
    key, value = b"\x00\xffkey", b"\x00value\xff"
    state.put(key, value)
    state.put(b"empty", b"")
    writer.flush()
    assert stored(node_stub, writer, "raw", key) == value
    assert state.get(key) == value
    assert state.get(b"empty") == b""  # an empty value is stored, not absent


def test_str_keys_and_values(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    state = writer.value_state("text", key_serializer=STR, value_serializer=STR)
    state.put("schlüssel", "wert ✓")
    writer.flush()
    assert stored(node_stub, writer, "text", "schlüssel".encode()) == "wert ✓".encode()
    assert state.get("schlüssel") == "wert ✓"


def test_int64_keys_and_values(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    state = writer.value_state("numbers", key_serializer=INT64, value_serializer=INT64)
    samples = [0, 1, -1, (1 << 63) - 1, -(1 << 63), 123456789]
    state.put_many([(n, -n if n != -(1 << 63) else n) for n in samples])
    writer.flush()
    assert stored(node_stub, writer, "numbers", INT64.dumps(-1)) == INT64.dumps(1)
    assert state.get_many(samples) == [0, -1, 1, -((1 << 63) - 1), -(1 << 63), -123456789]


def test_json_values_and_keys(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    state = writer.value_state("docs", key_serializer=JSON, value_serializer=JSON)
    document = {"name": "x", "tags": ["a", "b"], "nested": {"n": 1.5, "ok": True, "none": None}}
    state.put({"id": 1, "kind": "doc"}, document)
    writer.flush()
    # The same key given with another field order is the same key.
    assert state.get({"kind": "doc", "id": 1}) == document
    assert stored(node_stub, writer, "docs", b'{"id":1,"kind":"doc"}') == JSON.dumps(document)


def test_a_custom_serializer_for_keys_map_keys_and_values(writer: Writer, node_stub: state_pb2_grpc.StateServiceStub) -> None:
    points = PointSerializer()
    positions = writer.value_state("positions", key_serializer=points, value_serializer=points)
    positions.put(Point(1, 2), Point(-3, 4))
    grid = writer.map_state("grid", key_serializer=points, map_key_serializer=points, value_serializer=STR)
    grid.put(Point(0, 0), Point(5, 6), "treasure")
    trail = writer.list_state("trail", key_serializer=STR, value_serializer=points)
    trail.add_all("walker", [Point(0, 0), Point(0, 1)])
    writer.flush()
    assert stored(node_stub, writer, "positions", b"1,2") == b"-3,4"
    assert positions.get(Point(1, 2)) == Point(-3, 4)
    assert list(grid.items(Point(0, 0))) == [(Point(5, 6), "treasure")]
    assert trail.get("walker") == [Point(0, 0), Point(0, 1)]


def test_keys_route_by_their_serialized_bytes(writer: Writer) -> None:
    # The same key through different serializers is a different stored key (and maybe key group).
    as_int = writer.value_state("routing", key_serializer=INT64, value_serializer=STR)
    as_str = writer.value_state("routing", key_serializer=STR, value_serializer=STR)
    as_int.put(7, "int")
    as_str.put("7", "str")
    writer.flush()
    assert (as_int.get(7), as_str.get("7")) == ("int", "str")
    session = writer.session_for(INT64.dumps(7))
    assert key_group_for(INT64.dumps(7), writer.max_key_groups) in session.key_groups


def test_a_serializer_error_buffers_nothing(writer: Writer) -> None:
    """The error is InvalidArgumentError, as every client error is a StateServerError (old code: TypeError)."""
    state = writer.value_state("v", value_serializer=JSON)
    with pytest.raises(InvalidArgumentError):
        state.put("k", object())
    writer.flush()
    assert state.get("k") is None

"""Serializers turn keys and values into bytes and back. Key serializers must be
deterministic: the same key always gives the same bytes, in every process."""
from __future__ import annotations

import json
import struct
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
_I64 = struct.Struct("<q")


class Serializer(Protocol[T]):
    def dumps(self, obj: T) -> bytes: ...
    def loads(self, data: bytes) -> T: ...


class BytesSerializer:
    def dumps(self, obj: bytes) -> bytes:
        return bytes(obj)

    def loads(self, data: bytes) -> bytes:
        return data


class StrSerializer:
    def dumps(self, obj: str) -> bytes:
        return obj.encode("utf-8")

    def loads(self, data: bytes) -> str:
        return data.decode("utf-8")


class Int64Serializer:
    """Signed 64-bit little-endian, the encoding the int64 merge operators fold."""

    def dumps(self, obj: int) -> bytes:
        return _I64.pack(obj)

    def loads(self, data: bytes) -> int:
        return int(_I64.unpack(data)[0])


class JsonSerializer:
    """Compact JSON with sorted keys, so equal objects give equal bytes."""

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


BYTES = BytesSerializer()
STR = StrSerializer()
INT64 = Int64Serializer()
JSON = JsonSerializer()


"""Serializers turn keys and values into bytes and back. Key serializers must be
deterministic: the same key always gives the same bytes, in every process.

The built-in ones raise ``InvalidArgumentError`` for what they cannot encode or decode, as
every error the client raises is a ``StateServerError``.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Protocol, TypeVar

from stateserver.client._errors import InvalidArgumentError

T = TypeVar("T")
_I64 = struct.Struct("<q")


class Serializer(Protocol[T]):
    def dumps(self, obj: T) -> bytes: ...
    def loads(self, data: bytes) -> T: ...


class BytesSerializer:
    def dumps(self, obj: bytes) -> bytes:
        if not isinstance(obj, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"the BYTES serializer takes bytes, not {type(obj).__name__}")
        return bytes(obj)

    def loads(self, data: bytes) -> bytes:
        return data


class StrSerializer:
    def dumps(self, obj: str) -> bytes:
        try:
            return obj.encode("utf-8")
        except (AttributeError, UnicodeError) as exc:
            raise InvalidArgumentError(f"the STR serializer takes str, not {type(obj).__name__}: {exc}") from None

    def loads(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeError as exc:
            raise InvalidArgumentError(f"stored bytes are not UTF-8 text: {exc}") from None


class Int64Serializer:
    """Signed 64-bit little-endian, the encoding the int64 merge operators fold."""

    def dumps(self, obj: int) -> bytes:
        try:
            return _I64.pack(obj)
        except struct.error as exc:
            raise InvalidArgumentError(f"the INT64 serializer takes 64-bit ints, not {obj!r}: {exc}") from None

    def loads(self, data: bytes) -> int:
        try:
            return int(_I64.unpack(data)[0])
        except struct.error as exc:
            raise InvalidArgumentError(f"stored bytes are not a 64-bit int: {exc}") from None


class JsonSerializer:
    """Compact JSON with sorted keys, so equal objects give equal bytes."""

    def dumps(self, obj: Any) -> bytes:
        try:
            return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"the JSON serializer cannot encode {type(obj).__name__}: {exc}") from None

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise InvalidArgumentError(f"stored bytes are not JSON: {exc}") from None


BYTES = BytesSerializer()
STR = StrSerializer()
INT64 = Int64Serializer()
JSON = JsonSerializer()


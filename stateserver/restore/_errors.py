"""Errors of a restore that name the object at fault, so an operator knows what to look at."""
from __future__ import annotations

from stateserver.protocol.errors import CorruptData, NotFound


class MissingObject(NotFound):
    """An object the checkpoint names is not in the snapshot store."""

    def __init__(self, message: str, *, object_key: str) -> None:
        super().__init__(message)
        self.object_key = object_key


class CorruptObject(CorruptData):
    """An object's size or checksum differs from what the shard manifest recorded."""

    def __init__(self, message: str, *, object_key: str) -> None:
        super().__init__(message)
        self.object_key = object_key

"""The only module that knows how object keys in the snapshot store are spelled.

    <ns>/shared/<checkpoint>-<uuid>-<sst name>             immutable SSTs, reused by later checkpoints
    <ns>/private/<checkpoint>/<start>-<end>/<uuid>-<name>  a shard's RocksDB metadata of one checkpoint
    <ns>/manifests/<checkpoint>/<start>-<end>/<uuid>.pb    a shard manifest (ShardSnapshotHandle)
    <ns>/checkpoints/<checkpoint>/metadata.pb              the commit point (CheckpointMetadata)
    <ns>/owners/<start>-<end>/<epoch>                      shard ownership records (ownership.py)
    <ns>/epochs/<epoch>                                    allocated writer epochs (epoch_allocation.py)
    <ns>/namespace.json                                    the namespace's definition (node/namespace_records.py)

Every key names the checkpoint that wrote it, so garbage collection can tell what a checkpoint
still in flight may need (only ids above the latest committed one can still commit).
Checkpoint ids are zero-padded to 20 digits so that listing order is numeric order. Every
uploaded name carries a fresh uuid: RocksDB's file numbers repeat across restores and nodes,
and an object, once written, is never overwritten (invariant 1).
"""
from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Literal

from stateserver.protocol.keygroups import KeyGroupRange

_CHECKPOINT_DIGITS = 20
METADATA_NAME = "metadata.pb"


def _checkpoint(checkpoint_id: int) -> str:
    return f"{checkpoint_id:0{_CHECKPOINT_DIGITS}d}"


def _unique() -> str:
    return uuid.uuid4().hex


def shared_prefix(namespace: str) -> str:
    return f"{namespace}/shared"


def private_prefix(namespace: str) -> str:
    return f"{namespace}/private"


def manifests_prefix(namespace: str) -> str:
    return f"{namespace}/manifests"


def checkpoints_prefix(namespace: str) -> str:
    return f"{namespace}/checkpoints"


def shared_file(namespace: str, checkpoint_id: int, local_name: str) -> str:
    return f"{shared_prefix(namespace)}/{_checkpoint(checkpoint_id)}-{_unique()}-{local_name}"


def private_file(namespace: str, checkpoint_id: int, key_groups: KeyGroupRange, local_name: str) -> str:
    return f"{private_prefix(namespace)}/{_checkpoint(checkpoint_id)}/{key_groups}/{_unique()}-{local_name}"


def shard_manifest(namespace: str, checkpoint_id: int, key_groups: KeyGroupRange) -> str:
    return f"{manifests_prefix(namespace)}/{_checkpoint(checkpoint_id)}/{key_groups}/{_unique()}.pb"


def checkpoint_metadata(namespace: str, checkpoint_id: int) -> str:
    return f"{checkpoints_prefix(namespace)}/{_checkpoint(checkpoint_id)}/{METADATA_NAME}"


def checkpoint_id_of(key: str) -> int | None:
    """The id of the checkpoint that wrote an object; None for keys not spelled here."""
    parts = key.split("/")
    if len(parts) < 3:
        return None
    if parts[1] in ("private", "manifests", "checkpoints") and parts[2].isdigit():
        return int(parts[2])
    if parts[1] == "shared":
        digits = parts[2].split("-", 1)[0]
        return int(digits) if digits.isdigit() else None
    return None


def is_metadata(key: str) -> bool:
    return key.endswith("/" + METADATA_NAME) and checkpoint_id_of(key) is not None


def owners_prefix(namespace: str) -> str:
    return f"{namespace}/owners"


def owner_record(namespace: str, key_groups: KeyGroupRange, epoch: int) -> str:
    return f"{owners_prefix(namespace)}/{key_groups}/{epoch:0{_CHECKPOINT_DIGITS}d}"


def parse_owner_record(key: str) -> tuple[KeyGroupRange, int] | None:
    parts = key.split("/")
    if len(parts) != 4 or parts[1] != "owners" or not parts[3].isdigit():
        return None
    try:
        return KeyGroupRange.parse(parts[2]), int(parts[3])
    except ValueError:
        return None


def namespace_definition(namespace: str) -> str:
    """Written once, create-only, when the namespace is created; never collected (not spelled
    in ``_SPELLINGS``): a node on an empty data directory learns the namespace from it."""
    return f"{namespace}/namespace.json"


def epochs_prefix(namespace: str) -> str:
    return f"{namespace}/epochs"


def allocated_epoch(namespace: str, epoch: int) -> str:
    """Zero-padded like checkpoint ids, so the last key listed in order is the highest epoch.
    Garbage collection never deletes these (``parse_key`` does not spell them): an allocation
    must stay visible for as long as the namespace exists, or an epoch could be handed out twice."""
    return f"{epochs_prefix(namespace)}/{epoch:0{_CHECKPOINT_DIGITS}d}"


def parse_allocated_epoch(key: str) -> int | None:
    parts = key.split("/")
    if len(parts) != 3 or parts[1] != "epochs" or len(parts[2]) != _CHECKPOINT_DIGITS or not parts[2].isdigit():
        return None
    return int(parts[2])


ObjectKind = Literal["shared", "private", "manifest", "metadata"]

_CHECKPOINT_RE = rf"(?P<checkpoint>\d{{{_CHECKPOINT_DIGITS}}})"
_UNIQUE_RE = r"[0-9a-f]{32}"
_RANGE_RE = r"\d+-\d+"
# Exactly the spellings above, and nothing looser: garbage collection deletes only keys that
# match one of these, so an object someone else put under the namespace is never touched.
_SPELLINGS: tuple[tuple[ObjectKind, re.Pattern[str]], ...] = (
    ("shared", re.compile(rf"(?P<ns>[^/]+)/shared/{_CHECKPOINT_RE}-{_UNIQUE_RE}-[^/]+")),
    ("private", re.compile(rf"(?P<ns>[^/]+)/private/{_CHECKPOINT_RE}/{_RANGE_RE}/{_UNIQUE_RE}-[^/]+")),
    ("manifest", re.compile(rf"(?P<ns>[^/]+)/manifests/{_CHECKPOINT_RE}/{_RANGE_RE}/{_UNIQUE_RE}\.pb")),
    ("metadata", re.compile(rf"(?P<ns>[^/]+)/checkpoints/{_CHECKPOINT_RE}/{re.escape(METADATA_NAME)}")),
)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ParsedKey:
    namespace: str
    kind: ObjectKind
    checkpoint_id: int


def parse_key(key: str) -> ParsedKey | None:
    """What an object key spelled by this module names; None for any other key."""
    for kind, pattern in _SPELLINGS:
        match = pattern.fullmatch(key)
        if match is not None:
            return ParsedKey(namespace=match["ns"], kind=kind, checkpoint_id=int(match["checkpoint"]))
    return None

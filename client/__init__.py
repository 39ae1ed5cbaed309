"""The stateserver client that stream operators embed.

    from stateserver.client import StateClient
    with StateClient("127.0.0.1:7700") as state:
        state.create_namespace("wordcount", max_key_groups=128)
        with state.open_writer("wordcount", key_groups="0-127", epoch=1) as writer:
            counts = writer.aggregating_state("counts", merge_operator="sum_int64")
            counts.merge("apple", 3)
            assert counts.get("apple") == 3   # reads see the writer's own buffered writes
"""
from stateserver.client._checkpoint_info import CheckpointInfo
from stateserver.client._client import StateClient
from stateserver.client._errors import (
    AlreadyExistsError,
    DataCorruptionError,
    FencedError,
    InternalError,
    InvalidArgumentError,
    KeyGroupOutOfRangeError,
    NotFoundError,
    OutOfOrderError,
    ResourceExhaustedError,
    RestoreRequiredError,
    SessionFailedError,
    ShardClosedError,
    ShardNotOpenError,
    SnapshotFailedError,
    StateServerError,
    UnavailableError,
    WrongNodeError,
)
from stateserver.client._settings import ClientSettings
from stateserver.client._serializers import (
    BYTES,
    INT64,
    JSON,
    STR,
    BytesSerializer,
    Int64Serializer,
    JsonSerializer,
    Serializer,
    StrSerializer,
)
from stateserver.client._states import AggregatingState, ListState, MapState, ValueState
from stateserver.client._writer import Writer
from stateserver.client.checkpointing import CheckpointCoordinator, KeyedStateBackend, Recovery, first_checkpoint_id
from stateserver.protocol.keygroups import KeyGroupRange, key_group_for, range_for_operator, ranges_for_parallelism

__all__ = [
    "AggregatingState",
    "AlreadyExistsError",
    "BYTES",
    "BytesSerializer",
    "CheckpointCoordinator",
    "CheckpointInfo",
    "ClientSettings",
    "DataCorruptionError",
    "FencedError",
    "INT64",
    "Int64Serializer",
    "InternalError",
    "InvalidArgumentError",
    "JSON",
    "JsonSerializer",
    "KeyGroupOutOfRangeError",
    "KeyGroupRange",
    "KeyedStateBackend",
    "ListState",
    "MapState",
    "NotFoundError",
    "OutOfOrderError",
    "ResourceExhaustedError",
    "Recovery",
    "RestoreRequiredError",
    "SessionFailedError",
    "ShardClosedError",
    "STR",
    "Serializer",
    "ShardNotOpenError",
    "SnapshotFailedError",
    "StateClient",
    "StateServerError",
    "StrSerializer",
    "UnavailableError",
    "ValueState",
    "WrongNodeError",
    "Writer",
    "first_checkpoint_id",
    "key_group_for",
    "range_for_operator",
    "ranges_for_parallelism",
]

"""The client package exports exactly what its docs promise, and each name imports."""
from __future__ import annotations

import inspect

import grpc

from stateserver import client
from stateserver.client import _errors

# The documented public names of `client` (README, the package, errors and checkpointing docstrings).
# A name added to or dropped from __all__ must be added or dropped here too, deliberately.
PROMISED = {
    # connecting, writers and state handles
    "StateClient", "ClientSettings", "Writer", "ValueState", "ListState", "MapState", "AggregatingState",
    # serializers
    "Serializer", "BytesSerializer", "StrSerializer", "Int64Serializer", "JsonSerializer",
    "BYTES", "STR", "INT64", "JSON",
    # key groups
    "KeyGroupRange", "key_group_for", "range_for_operator", "ranges_for_parallelism",
    # checkpoint hooks for operators (client/checkpointing.py)
    "KeyedStateBackend", "CheckpointCoordinator", "first_checkpoint_id", "Recovery", "CheckpointInfo",
    # errors
    "StateServerError", "InvalidArgumentError", "KeyGroupOutOfRangeError", "NotFoundError",
    "AlreadyExistsError", "FencedError", "ShardNotOpenError", "WrongNodeError", "DataCorruptionError",
    "UnavailableError", "SnapshotFailedError", "InternalError",
    "RestoreRequiredError", "SessionFailedError", "OutOfOrderError", "ShardClosedError", "ResourceExhaustedError",
}


def test_all_is_exactly_the_promised_names() -> None:
    assert sorted(client.__all__) == sorted(PROMISED)
    assert len(client.__all__) == len(set(client.__all__))


def test_each_name_imports() -> None:
    namespace: dict[str, object] = {}
    exec("from stateserver.client import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == PROMISED
    for name in PROMISED:
        assert getattr(client, name) is not None
        assert namespace[name] is getattr(client, name)
        assert not name.startswith("_")


def test_the_error_tree_is_the_one_drawn_in_the_errors_module() -> None:
    errors = {name: getattr(client, name) for name in PROMISED if name.endswith("Error")}
    drawn = _errors.__doc__ or ""
    for name, error in errors.items():
        assert inspect.isclass(error) and issubclass(error, client.StateServerError)
        assert not issubclass(error, grpc.RpcError)  # gRPC errors are translated, never leaked
        assert name in drawn, f"{name} is missing from the tree in client/_errors.py"
    assert issubclass(client.KeyGroupOutOfRangeError, client.InvalidArgumentError)
    retriable = {name for name, error in errors.items() if error.retriable}
    assert retriable == {"UnavailableError", "WrongNodeError", "OutOfOrderError", "ShardClosedError",
                         "ResourceExhaustedError"}
    assert issubclass(client.RestoreRequiredError, client.ShardNotOpenError)
    assert {name for name, error in errors.items() if error.refresh_routing} == {"WrongNodeError"}


def test_the_packages_example_names_public_things_only() -> None:
    assert "from stateserver.client import StateClient" in (client.__doc__ or "")

"""Errors through the client: gRPC statuses become the client's exceptions, at one boundary."""
from __future__ import annotations

import grpc
import pytest

from stateserver.client import (
    AlreadyExistsError, InvalidArgumentError, NotFoundError, RestoreRequiredError,
    ShardNotOpenError, StateClient, StateServerError,
    UnavailableError, Writer,
)
from support.node import free_loopback_port


def assert_translated(error: StateServerError, code: grpc.StatusCode) -> None:
    assert error.code == code
    assert isinstance(error.__cause__, grpc.RpcError)  # chained, for debugging, but not leaked
    assert not isinstance(error, grpc.RpcError)
    assert code.name in str(error)


def test_unknown_namespace(client: StateClient) -> None:
    with pytest.raises(NotFoundError) as error:
        client.open_writer("never-created", key_groups="0-127", epoch=1)
    assert_translated(error.value, grpc.StatusCode.NOT_FOUND)
    assert "never-created" in str(error.value)


def test_namespace_conflicts_and_bad_names(client: StateClient, namespace: str) -> None:
    assert client.create_namespace(namespace, max_key_groups=128) == 128  # again, the same: fine
    with pytest.raises(AlreadyExistsError) as conflict:
        client.create_namespace(namespace, max_key_groups=64)
    assert_translated(conflict.value, grpc.StatusCode.ALREADY_EXISTS)
    assert client.max_key_groups(namespace) == 128
    for bad in ("..", "a/b", "x\x00y", "n" * 10_000, ""):
        with pytest.raises(InvalidArgumentError) as invalid:
            client.create_namespace(bad, max_key_groups=128)
        assert_translated(invalid.value, grpc.StatusCode.INVALID_ARGUMENT)


def test_a_state_redeclared_with_another_kind(writer: Writer) -> None:
    writer.value_state("taken").put("k", 1)
    writer.flush()
    with pytest.raises(AlreadyExistsError) as error:
        writer.list_state("taken")
    assert_translated(error.value, grpc.StatusCode.ALREADY_EXISTS)
    with pytest.raises(AlreadyExistsError):
        writer.aggregating_state("taken", merge_operator="sum_int64")
    assert writer.value_state("taken").get("k") == 1


def test_a_value_or_key_the_node_would_refuse_is_refused_at_the_call(writer: Writer) -> None:
    """Refused before anything is buffered, so the writer goes on. (Old code: buffered, sent, and
    refused by the node with the batch it was in, whose other writes were lost.)"""
    values = writer.value_state("v")
    values.put("before", "applied")
    writer.flush()
    values.put("batch-mate", "applied")
    with pytest.raises(InvalidArgumentError, match="exceeds the node's limit"):
        values.put("too-big", "x" * ((16 << 20) + 1))
    with pytest.raises(InvalidArgumentError, match="empty"):
        values.put("", "an empty key")
    with pytest.raises(InvalidArgumentError, match="exceeds the node's limit"):
        values.put("k" * ((64 << 10) + 1), "a long key")
    writer.flush()
    assert values.get_many(["before", "batch-mate", "too-big"]) == ["applied", "applied", None]


@pytest.mark.timeout(30)
def test_no_node_at_the_address() -> None:
    with StateClient(f"127.0.0.1:{free_loopback_port()}", timeout=3) as nobody:
        with pytest.raises(UnavailableError) as error:
            nobody.create_namespace("x", max_key_groups=128)
    assert error.value.retriable


def test_a_closed_writer_is_told_to_open_the_shard_again(client: StateClient, namespace: str) -> None:
    writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
    values = writer.value_state("v")
    values.put("k", 1)
    writer.close()  # flushes, then releases the shard
    reopened = client.reopen(writer)  # the same writer resumes the shard it closed cleanly
    assert reopened.value_state("v").get("k") == 1
    reopened.close()
    values.put("k", 2)
    with pytest.raises(ShardNotOpenError) as error:
        writer.flush()
    assert_translated(error.value, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.value.reason == "shard-not-open"
    # The refused batch failed the writer's session: only a reopen from a checkpoint (or empty) helps.
    with pytest.raises(RestoreRequiredError):
        client.reopen(writer)
    assert client.reopen(writer, restore="empty").value_state("v").get("k") is None

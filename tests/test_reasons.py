"""One table of error reasons (stateserver.protocol.reasons) from which both sides derive: the node
its gRPC status per error, the client its exception class per reason.

Before the table, the node's STATUS_FOR_ERROR and the client's _BY_REASON were kept in step by hand
(the client mapped 9 of the 16 reasons); these tests did not import on that code. The statuses and
client classes expected below are what that code produced, so the table changed no behaviour.
"""
from __future__ import annotations

import concurrent.futures
import inspect
from collections.abc import Iterator

import grpc
import pytest

from stateserver import client
from stateserver.client import _errors as client_errors
from stateserver.compaction.commit import CompactionConflict
from stateserver.node.state_service import translate_errors
from stateserver.protocol import errors as node_errors
from stateserver.protocol import reasons
from stateserver.restore import CorruptObject, MissingObject

Code = grpc.StatusCode

# node error -> (status, client exception), as the hand-kept tables answered before the shared one
EXPECTED: dict[type[node_errors.StateServerError], tuple[grpc.StatusCode, type[client.StateServerError]]] = {
    node_errors.StateServerError: (Code.INTERNAL, client.InternalError),
    node_errors.InvalidInput: (Code.INVALID_ARGUMENT, client.InvalidArgumentError),
    node_errors.KeyGroupOutOfRange: (Code.OUT_OF_RANGE, client.KeyGroupOutOfRangeError),
    node_errors.ReplyTooLarge: (Code.INVALID_ARGUMENT, client.InvalidArgumentError),
    node_errors.NotFound: (Code.NOT_FOUND, client.NotFoundError),
    node_errors.AlreadyExists: (Code.ALREADY_EXISTS, client.AlreadyExistsError),
    node_errors.Fenced: (Code.FAILED_PRECONDITION, client.FencedError),
    node_errors.ShardNotOpen: (Code.FAILED_PRECONDITION, client.ShardNotOpenError),
    node_errors.RestoreRequired: (Code.FAILED_PRECONDITION, client.RestoreRequiredError),
    node_errors.SessionFailed: (Code.FAILED_PRECONDITION, client.SessionFailedError),
    node_errors.WrongNode: (Code.FAILED_PRECONDITION, client.WrongNodeError),
    node_errors.CorruptData: (Code.DATA_LOSS, client.DataCorruptionError),
    node_errors.ResourceExhausted: (Code.RESOURCE_EXHAUSTED, client.ResourceExhaustedError),
    node_errors.Unavailable: (Code.UNAVAILABLE, client.UnavailableError),
    node_errors.OutOfOrder: (Code.ABORTED, client.OutOfOrderError),
    node_errors.ShardClosed: (Code.UNAVAILABLE, client.ShardClosedError),
    # errors of other packages inherit their kind's reason
    MissingObject: (Code.NOT_FOUND, client.NotFoundError),
    CorruptObject: (Code.DATA_LOSS, client.DataCorruptionError),
    CompactionConflict: (Code.ALREADY_EXISTS, client.AlreadyExistsError),
}


def node_error_classes() -> dict[str, type[node_errors.StateServerError]]:
    """Reason -> the class in protocol.errors that declares it."""
    declared = {}
    for _, error_type in inspect.getmembers(node_errors, inspect.isclass):
        if issubclass(error_type, node_errors.StateServerError) and "reason" in vars(error_type):
            assert error_type.reason not in declared, f"two node errors declare {error_type.reason!r}"
            declared[error_type.reason] = error_type
    return declared


def test_every_reason_has_one_node_error_and_a_client_exception() -> None:
    node = node_error_classes()
    assert set(node) == set(reasons.BY_NAME), "each reason in the table has a node error, and no other"
    assert set(client_errors._BY_REASON) == set(reasons.BY_NAME), "each reason in the table has a client class"
    for exception in client_errors._BY_REASON.values():
        assert getattr(client, exception.__name__) is exception, f"{exception.__name__} is not exported"
    declared_by_client = {vars(c)["_reason"] for c in client_errors._BY_REASON.values()}
    assert declared_by_client <= set(reasons.BY_NAME), "a client class stands for a reason the table lacks"


def test_both_error_trees_follow_the_table() -> None:
    """A reason refining another (``kind_of``) is a subclass of the other's error on both sides."""
    node = node_error_classes()
    for reason in reasons.REASONS:
        parent = node[reason.kind_of] if reason.kind_of is not None else node_errors.StateServerError
        if reason.name != "internal":
            assert node[reason.name].__bases__ == (parent,), reason.name
        if reason.kind_of is not None:
            assert issubclass(client_errors._BY_REASON[reason.name], client_errors._BY_REASON[reason.kind_of])
    for reason in reasons.REASONS:  # a row says what the reason means, and is an error
        assert reason.meaning and reason.status is not Code.OK


@pytest.fixture(scope="module")
def raising_node() -> Iterator[grpc.Channel]:
    """A gRPC server whose one method raises the node error its request names, through the node's
    boundary (``translate_errors``), as every StateService and CheckpointService handler does."""
    by_name = {error_type.__name__: error_type for error_type in EXPECTED}

    class Raiser:
        @translate_errors
        def Raise(self, request: bytes, context: grpc.ServicerContext) -> bytes:
            error_type = by_name[request.decode()]
            if error_type in (MissingObject, CorruptObject):
                raise error_type("the object is bad", object_key="ns/shared/000001.sst")
            raise error_type(f"a {error_type.__name__}")

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Errors", {"Raise": grpc.unary_unary_rpc_method_handler(Raiser().Raise)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    server.stop(None)


@pytest.mark.parametrize("error_type", list(EXPECTED), ids=lambda t: t.__name__)
def test_each_node_error_travels_with_its_reasons_status_and_becomes_the_tables_client_exception(
        raising_node: grpc.Channel, error_type: type[node_errors.StateServerError]) -> None:
    status, exception = EXPECTED[error_type]
    with pytest.raises(grpc.RpcError) as caught:
        raising_node.unary_unary("/test.Errors/Raise")(error_type.__name__.encode(), timeout=10)
    call = caught.value
    assert call.code() == status == reasons.status_of(error_type.reason)  # type: ignore[attr-defined]
    sent = tuple(call.trailing_metadata())  # type: ignore[attr-defined]
    assert (reasons.REASON_METADATA_KEY, error_type.reason) in sent
    translated = client_errors.translate_rpc_error(call, address="node-1:7700")
    assert type(translated) is exception and translated.reason == error_type.reason and translated.code == status

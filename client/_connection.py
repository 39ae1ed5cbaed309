"""One gRPC channel per node address; every call made here translates gRPC errors."""
from __future__ import annotations

import dataclasses

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from stateserver.client._errors import StateServerError, translate_rpc_error
from stateserver.client._node_limits import NodeLimits
from stateserver.client._settings import ClientSettings
from stateserver.protocol.v1 import checkpoint_pb2_grpc, state_pb2_grpc
from stateserver.protocol.v1 import state_pb2 as pb

Reply = TypeVar("Reply")


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return ClientSettings(max_message_bytes=max_message_bytes).channel_options()


def is_unreachable(error: StateServerError) -> bool:
    """The node could not be reached (down, restarting, draining), as opposed to a node that
    answered UNAVAILABLE itself (its object store is out, say) and is very much there."""
    return error.code is grpc.StatusCode.UNAVAILABLE and not error.reason


class PendingCall(Generic[Reply]):
    """A call in flight; ``result()`` waits and translates a failure."""

    def __init__(self, future: grpc.Future, connection: NodeConnection) -> None:
        self._future = future
        self._connection = connection

    def done(self) -> bool:
        return bool(self._future.done())

    def result(self) -> Reply:
        try:
            return self._future.result()  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            raise self._connection.translate(exc) from exc


class NodeConnection:
    """A channel to the node called ``address`` in the cluster, dialled at ``target`` (its advertised
    address, by default the same)."""

    def __init__(self, address: str, *, max_message_bytes: int | None = None, timeout: float | None = None,
                 on_unavailable: Callable[[str], None] | None = None, target: str | None = None,
                 settings: ClientSettings | None = None) -> None:
        settings = settings or ClientSettings()
        self.address = address
        self.target = target or address
        self.timeout = timeout or settings.request_timeout
        self.max_message_bytes = max_message_bytes or settings.max_message_bytes
        self.settings = settings
        self.limits: NodeLimits | None = None  # learnt from the node's NodeInfo, once
        self._on_unavailable = on_unavailable
        options = ClientSettings.channel_options(dataclasses.replace(settings, max_message_bytes=self.max_message_bytes))
        self.channel = grpc.insecure_channel(self.target, options=options)
        # Method names are unique across the node's services, so a call names only the method.
        state = state_pb2_grpc.StateServiceStub(self.channel)
        checkpoint = checkpoint_pb2_grpc.CheckpointServiceStub(self.channel)
        self._methods: dict[str, Any] = {}
        for stub in (state, checkpoint):
            self._methods.update({name: value for name, value in vars(stub).items() if not name.startswith("_")})

    def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        try:
            return self._methods[method](request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise self.translate(exc) from exc

    def start(self, method: str, request: Any, *, timeout: float | None = None) -> PendingCall[Any]:
        future = self._methods[method].future(request, timeout=timeout or self.timeout)
        return PendingCall(future, self)

    def node_info(self, *, timeout: float | None = None) -> pb.NodeInfoResponse:
        reply: pb.NodeInfoResponse = self.call("NodeInfo", pb.NodeInfoRequest(), timeout=timeout)
        self.limits = NodeLimits.from_node_info(reply, self.max_message_bytes)
        return reply

    def node_limits(self) -> NodeLimits:
        """What the node accepts (asked once per connection)."""
        if self.limits is None:
            self.node_info(timeout=self.settings.connect_timeout)
        assert self.limits is not None
        return self.limits

    def translate(self, error: grpc.RpcError) -> StateServerError:
        translated = translate_rpc_error(error, address=self.address)
        if is_unreachable(translated) and self._on_unavailable is not None:
            self._on_unavailable(self.address)  # down or draining: route around it until a probe answers
        return translated

    def close(self) -> None:
        self.channel.close()

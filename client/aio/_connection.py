"""One grpc.aio channel per node address; gRPC errors are translated by the sync client's translator."""
from __future__ import annotations

import dataclasses

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from stateserver.client._connection import NodeConnection
from stateserver.client._settings import ClientSettings
from stateserver.client._errors import StateServerError
from stateserver.client._node_limits import NodeLimits
from stateserver.protocol.v1 import checkpoint_pb2_grpc, state_pb2_grpc
from stateserver.protocol.v1 import state_pb2 as pb


class AsyncNodeConnection:
    """A channel to the node called ``address``, dialled at ``target`` (as ``NodeConnection``)."""

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
        self.channel = grpc.aio.insecure_channel(self.target, options=options)
        # Method names are unique across the node's services, so a call names only the method.
        self._methods: dict[str, Any] = {}
        for stub in (state_pb2_grpc.StateServiceStub(self.channel), checkpoint_pb2_grpc.CheckpointServiceStub(self.channel)):
            self._methods.update({name: value for name, value in vars(stub).items() if not name.startswith("_")})

    async def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        try:
            return await self._methods[method](request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.translate(exc) from exc

    async def node_info(self, *, timeout: float | None = None) -> pb.NodeInfoResponse:
        reply: pb.NodeInfoResponse = await self.call("NodeInfo", pb.NodeInfoRequest(), timeout=timeout)
        self.limits = NodeLimits.from_node_info(reply, self.max_message_bytes)
        return reply

    async def node_limits(self) -> NodeLimits:
        """What the node accepts (asked once per connection)."""
        if self.limits is None:
            await self.node_info(timeout=self.settings.connect_timeout)
        assert self.limits is not None
        return self.limits

    def translate(self, error: grpc.RpcError) -> StateServerError:
        """The sync connection's: translates, and reports a node that answered UNAVAILABLE."""
        return NodeConnection.translate(self, error)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.channel.close()

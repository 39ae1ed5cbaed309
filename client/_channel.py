"""What a connection to one node is, whichever gRPC flavour carries it: the node's name and the
address it is dialled at, the method table, what the node accepts, and error translation.

The sync face opens it with ``grpc.insecure_channel``, the asyncio face with
``grpc.aio.insecure_channel``; the node's NodeInfo is asked through a plan, run by the face.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc

from stateserver.client._client_core import is_unreachable
from stateserver.client._errors import StateServerError, translate_rpc_error
from stateserver.client._node_limits import NodeLimits
from stateserver.client._plans import Call, Plan
from stateserver.client._settings import ClientSettings
from stateserver.protocol.v1 import checkpoint_pb2_grpc, state_pb2_grpc
from stateserver.protocol.v1 import state_pb2 as pb


class Channel:
    """A channel to the node called ``address`` in the cluster, dialled at ``target`` (its advertised
    address, by default the same)."""

    def __init__(self, address: str, *, open_channel: Callable[..., Any], max_message_bytes: int | None = None,
                 timeout: float | None = None, on_unavailable: Callable[[str], None] | None = None,
                 target: str | None = None, settings: ClientSettings | None = None) -> None:
        settings = settings or ClientSettings()
        self.address = address
        self.target = target or address
        self.timeout = timeout or settings.request_timeout
        self.max_message_bytes = max_message_bytes or settings.max_message_bytes
        self.settings = settings
        self.limits: NodeLimits | None = None  # learnt from the node's NodeInfo, once
        self._on_unavailable = on_unavailable
        options = ClientSettings.channel_options(dataclasses.replace(settings, max_message_bytes=self.max_message_bytes))
        self.channel = open_channel(self.target, options=options)
        # Method names are unique across the node's services, so a call names only the method.
        self._methods: dict[str, Any] = {}
        for stub in (state_pb2_grpc.StateServiceStub(self.channel), checkpoint_pb2_grpc.CheckpointServiceStub(self.channel)):
            self._methods.update({name: value for name, value in vars(stub).items() if not name.startswith("_")})

    def translate(self, error: grpc.RpcError) -> StateServerError:
        translated = translate_rpc_error(error, address=self.address)
        if is_unreachable(translated) and self._on_unavailable is not None:
            self._on_unavailable(self.address)  # down or draining: route around it until a probe answers
        return translated

    def learn_node_info(self, timeout: float | None = None) -> Plan:
        reply: pb.NodeInfoResponse = yield Call(self, "NodeInfo", pb.NodeInfoRequest(), timeout)
        self.limits = NodeLimits.from_node_info(reply, self.max_message_bytes)
        return reply

    def learn_limits(self) -> Plan:
        """What the node accepts (asked once per connection)."""
        if self.limits is None:
            yield from self.learn_node_info(self.settings.connect_timeout)
        assert self.limits is not None
        return self.limits

"""A raw stub over every worker of one node, for tests that send what the client never would.

With ``--workers N`` a node is N placement members: a shard is served only by the worker it
belongs on (the others answer WrongNode), and a namespace exists on a worker only once that
worker was asked to create it. The client routes and fans out by itself; a raw-stub test gets
the same from ``RoutingStub``: a request that names a shard (``request.shard``) goes to the
worker the shard belongs on, CreateNamespace goes to every worker (the first error, else
worker 0's reply, once every worker was asked), anything else to worker 0. With one worker it is a
plain stub to the node.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from stateserver.protocol.v1 import checkpoint_pb2_grpc, state_pb2_grpc
from support.node import NodeProcess

FAN_OUT = frozenset({"CreateNamespace"})  # what every worker must be told, as the client does


class _RoutedMethod:
    """One RPC of the routing stub: the call itself, ``.future`` and ``.with_call``."""

    def __init__(self, node: NodeProcess, stub_class: Callable[[grpc.Channel], Any], name: str) -> None:
        self._node, self._stub_class, self._name = node, stub_class, name

    def _method(self, index: int) -> Any:
        return getattr(self._stub_class(self._node.worker_channel(index)), self._name)

    def _worker(self, request: Any) -> int:
        if "shard" not in request.DESCRIPTOR.fields_by_name:
            return 0
        shard = request.shard
        return self._node.shard_worker(shard.namespace, (shard.key_group_start, shard.key_group_end))

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if self._name in FAN_OUT:
            return self._to_every_worker(request, *args, **kwargs)
        return self._method(self._worker(request))(request, *args, **kwargs)

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._method(self._worker(request)).future(request, *args, **kwargs)

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._method(self._worker(request)).with_call(request, *args, **kwargs)

    def _to_every_worker(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        outcomes: list[Any] = []
        for index in range(self._node.workers):
            try:
                outcomes.append(self._method(index)(request, *args, **kwargs))
            except grpc.RpcError as error:
                outcomes.append(error)
        for outcome in outcomes:
            if isinstance(outcome, grpc.RpcError):
                raise outcome
        return outcomes[0]


class RoutingStub:
    """``RoutingStub(node)``: a StateService stub; ``RoutingStub(node, CheckpointServiceStub)``: that service."""

    def __init__(self, node: NodeProcess,
                 stub_class: Callable[[grpc.Channel], Any] = state_pb2_grpc.StateServiceStub) -> None:
        self._node, self._stub_class = node, stub_class

    def __getattr__(self, name: str) -> _RoutedMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return _RoutedMethod(self._node, self._stub_class, name)


def checkpoint_stub(node: NodeProcess) -> RoutingStub:
    return RoutingStub(node, checkpoint_pb2_grpc.CheckpointServiceStub)

"""The sync face's connection: blocking gRPC calls and futures; and the loop that runs plans."""
from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from stateserver.client._channel import Channel
from stateserver.client._errors import StateServerError
from stateserver.client._node_limits import NodeLimits
from stateserver.client._plans import Call, Each, Plan, Sleep, Step, Stepper
from stateserver.protocol.v1 import state_pb2 as pb

Reply = TypeVar("Reply")
# Shards opened at the same time; how many of those calls one node gets at once is
# ClientSettings.opens_per_node, so a recovery keeps every node that takes shards busy.
_PLANS_AT_ONCE = 32


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


class NodeConnection(Channel):
    def __init__(self, address: str, **options: Any) -> None:
        super().__init__(address, open_channel=grpc.insecure_channel, **options)
        # Each OpenShard may download a restore on the node and holds one of its RPC threads.
        self._open_slots = threading.BoundedSemaphore(self.settings.opens_per_node)

    def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        if method == "OpenShard":
            with self._open_slots:
                return self._call(method, request, timeout)
        return self._call(method, request, timeout)

    def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return self._methods[method](request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise self.translate(exc) from exc

    def start(self, method: str, request: Any, *, timeout: float | None = None) -> PendingCall[Any]:
        future = self._methods[method].future(request, timeout=timeout or self.timeout)
        return PendingCall(future, self)

    def node_info(self, *, timeout: float | None = None) -> pb.NodeInfoResponse:
        return run_plan(self.learn_node_info(timeout))  # type: ignore[no-any-return]

    def node_limits(self) -> NodeLimits:
        """What the node accepts (asked once per connection)."""
        return run_plan(self.learn_limits())  # type: ignore[no-any-return]

    def close(self) -> None:
        self.channel.close()


def _itself(via: Any) -> Any:
    return via


def run_plan(plan: Plan, connect: Callable[[Any], NodeConnection] = _itself) -> Any:
    """Run a plan with blocking calls; ``connect`` turns a node's name into its connection."""
    stepper = Stepper(plan)
    step = stepper.first()
    while not stepper.done:
        step = stepper.resume(*_perform(step, connect))  # type: ignore[arg-type]
    return stepper.result


def _perform(step: Step, connect: Callable[[Any], NodeConnection]) -> tuple[Any, StateServerError | None]:
    try:
        if isinstance(step, Call):
            return connect(step.via).call(step.method, step.request, timeout=step.timeout), None
        if isinstance(step, Each):
            pending = [connect(c.via).start(c.method, c.request, timeout=c.timeout) for c in step.calls]
            return [_settled(call) if step.settle else call.result() for call in pending], None
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None, None
        with concurrent.futures.ThreadPoolExecutor(min(len(step.plans), _PLANS_AT_ONCE) or 1,
                                                   thread_name_prefix="open-shard") as pool:
            return list(pool.map(lambda plan: run_plan(plan, connect), step.plans)), None
    except StateServerError as exc:
        return None, exc


def _settled(call: PendingCall[Any]) -> Any:
    try:
        return call.result()
    except StateServerError as exc:
        return exc

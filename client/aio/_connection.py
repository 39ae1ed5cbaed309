"""The asyncio face's connection (grpc.aio), and the coroutine that runs plans."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from stateserver.client._channel import Channel
from stateserver.client._errors import StateServerError
from stateserver.client._plans import Call, Each, Plan, Sleep, Step, Stepper


class AsyncNodeConnection(Channel):
    def __init__(self, address: str, **options: Any) -> None:
        super().__init__(address, open_channel=grpc.aio.insecure_channel, **options)
        # Each OpenShard may download a restore on the node and holds one of its RPC threads
        # (ClientSettings.opens_per_node, as the sync connection).
        self._open_slots = asyncio.Semaphore(self.settings.opens_per_node)

    async def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        if method == "OpenShard":
            async with self._open_slots:
                return await self._call(method, request, timeout)
        return await self._call(method, request, timeout)

    async def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return await self._methods[method](request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.translate(exc) from exc

    def node_info(self, *, timeout: float | None = None) -> Any:
        return drive(self.learn_node_info(timeout))

    def node_limits(self) -> Any:
        """What the node accepts (asked once per connection)."""
        return drive(self.learn_limits())

    async def close(self) -> None:
        await self.channel.close()


def _itself(via: Any) -> Any:
    return via


async def drive(plan: Plan, connect: Callable[[Any], AsyncNodeConnection] = _itself) -> Any:
    """Run a plan on the event loop; ``connect`` turns a node's name into its connection."""
    stepper = Stepper(plan)
    step = stepper.first()
    while not stepper.done:
        outcome, error = await _perform(step, connect)  # type: ignore[arg-type]
        step = stepper.resume(outcome, error)
    return stepper.result


async def _perform(step: Step, connect: Callable[[Any], AsyncNodeConnection]) -> tuple[Any, StateServerError | None]:
    try:
        if isinstance(step, Call):
            return await connect(step.via).call(step.method, step.request, timeout=step.timeout), None
        if isinstance(step, Each):
            calls = (connect(c.via).call(c.method, c.request, timeout=c.timeout) for c in step.calls)
            return list(await asyncio.gather(*calls, return_exceptions=step.settle)), None
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None, None
        return list(await asyncio.gather(*(drive(plan, connect) for plan in step.plans))), None
    except StateServerError as exc:
        return None, exc

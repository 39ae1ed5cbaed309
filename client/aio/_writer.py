"""AsyncWriter: the one asyncio client that owns a set of shards of a namespace at an epoch.

Its operations are ``WriterCore``'s, each returning an awaitable (the plan run on the event loop);
what is its own is driving its sessions: flushing and closing them, and answering a read with one
future however many keys and shards it spans.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from stateserver.client._handles import Values
from stateserver.client._plans import Plan
from stateserver.client._positions import picked, scatter
from stateserver.client._writer_core import WriterCore
from stateserver.client.aio._connection import drive
from stateserver.client.aio._session import AsyncShardSession
from stateserver.client.aio._states import AsyncAggregatingState, AsyncListState, AsyncMapState, AsyncValueState
from stateserver.protocol.operations import ReadOp


class AsyncWriter(WriterCore[AsyncShardSession]):
    __doc__ = WriterCore.__doc__
    _handle_types = (AsyncValueState, AsyncListState, AsyncMapState, AsyncAggregatingState)

    def _run(self, plan: Plan) -> Any:
        return drive(plan)

    @property
    def outstanding(self) -> int:
        """Operations accepted and not yet answered, over all shards."""
        return sum(session.outstanding.in_use for session in self.sessions)

    def join(self, outcomes: list[Any]) -> Any:
        """One awaitable for a call's writes: a settled one unless some had to wait in line."""
        waiting = [outcome for outcome in outcomes if not outcome.done()]
        if waiting:
            return asyncio.gather(*waiting)
        return outcomes[0] if outcomes else _settled(None)

    def read(self, op: ReadOp, state: str, keys: Sequence[bytes], map_keys: Sequence[bytes], merge_operator: str,
             finish: Callable[[Values], Any]) -> asyncio.Future[Any]:
        if len(keys) == 1:  # joined with the shard's other single-key reads: one future, nothing per part
            return self.session_for(keys[0]).read_one(op, state, keys[0], map_keys[0] if map_keys else b"",
                                                      merge_operator, finish)
        groups = self.split(keys)
        answer = _Answer(asyncio.get_running_loop().create_future(), finish, len(keys), len(groups))
        for session, chosen, key_groups in groups:
            session.read(op, state, picked(keys, chosen), picked(map_keys, chosen), merge_operator,
                         answer.part(chosen), key_groups)
        if not groups:
            answer.settle()
        return answer.future

    async def flush(self) -> None:
        """Wait until the nodes applied every write accepted so far."""
        self.failure.check()
        await asyncio.gather(*(session.flush() for session in self.sessions))

    async def snapshot(self, checkpoint_id: int) -> float:
        """The sync phase at the barrier: flush, then every shard takes its local checkpoint.
        Returns the longest sync pause in ms; uploads go on in the background on the nodes."""
        await self.flush()
        return await self._run(self._take_snapshot(checkpoint_id))  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Flush and release the shards (they stay on the node's disk)."""
        try:
            await self.flush()
            await self._run(self._close_shards())
        finally:
            for session in self.sessions:
                await session.close()

    async def __aenter__(self) -> AsyncWriter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            await self.close()
        else:
            for session in self.sessions:
                await session.close()


class _Answer:
    """One read call's future, settled once every shard's part of it is answered."""

    def __init__(self, future: asyncio.Future[Any], finish: Callable[[Values], Any], count: int, parts: int) -> None:
        self.future, self._finish, self._parts = future, finish, parts
        self._values: Values = [None] * count

    def part(self, indexes: list[int] | None) -> Callable[[Values, BaseException | None], None]:
        def answered(values: Values, error: BaseException | None) -> None:
            if error is not None:
                if not self.future.done():
                    self.future.set_exception(error)
                return
            if indexes is None:
                self._values = values
            else:
                scatter(self._values, indexes, values)
            self._parts -= 1
            if self._parts == 0:
                self.settle()
        return answered

    def settle(self) -> None:
        if self.future.done():
            return
        try:
            self.future.set_result(self._finish(self._values))
        except Exception as exc:  # a value the serializer cannot decode
            self.future.set_exception(exc)


def _settled(value: Any) -> asyncio.Future[Any]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future

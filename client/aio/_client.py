"""AsyncStateClient: the asyncio face of the client: ``ClientCore``'s operations as awaitables."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stateserver.client._client_core import ClientCore
from stateserver.client._plans import Plan
from stateserver.client._settings import ClientSettings
from stateserver.client.aio._connection import AsyncNodeConnection, drive
from stateserver.client.aio._session import AsyncShardSession, CoalescingLimits
from stateserver.client.aio._writer import AsyncWriter


class AsyncStateClient(ClientCore):
    _connection_type = AsyncNodeConnection
    _writer_type = AsyncWriter
    _session_type = AsyncShardSession

    """Talks to a cluster through the seed ``addresses``, from one asyncio event loop.

    A shard's node is the first node in its rendezvous placement order that this client has not
    found unreachable, computed as the sync client and the nodes compute it; the node list and the
    unreachable nodes heal as in ``StateClient`` (same ``ClientSettings``, same code). Every
    operation returns an awaitable. ``limits`` says how requests to one shard are coalesced into
    batches and how many may be outstanding.
    """

    def __init__(self, addresses: Sequence[str] | str, *, settings: ClientSettings | None = None,
                 timeout: float | None = None, max_message_bytes: int | None = None,
                 limits: CoalescingLimits | None = None) -> None:
        super().__init__(addresses, settings=settings, timeout=timeout, max_message_bytes=max_message_bytes)
        self.limits = self._session_limits = limits or CoalescingLimits()

    def _run(self, plan: Plan) -> Any:
        return drive(plan, self._connect)

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.close()

    async def __aenter__(self) -> AsyncStateClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

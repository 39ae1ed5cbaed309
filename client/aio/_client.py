"""AsyncStateClient: the asyncio face of the client: ``ClientCore``'s operations as awaitables."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stateserver.client._client_core import ClientCore
from stateserver.client._failure import WriterFailure
from stateserver.client._node_limits import NodeLimits
from stateserver.client._plans import Plan
from stateserver.client._settings import ClientSettings
from stateserver.client.aio._connection import AsyncNodeConnection, drive
from stateserver.client.aio._session import AsyncShardSession, CoalescingLimits
from stateserver.client.aio._writer import AsyncWriter
from stateserver.protocol.keygroups import KeyGroupRange


class AsyncStateClient(ClientCore):
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
        self.limits = limits or CoalescingLimits()
        self._connections: dict[str, AsyncNodeConnection] = {}

    def _run(self, plan: Plan) -> Any:
        return drive(plan, self._connect)

    def _connect(self, via: Any) -> AsyncNodeConnection:
        return self.connection(via) if isinstance(via, str) else via

    def connection(self, address: str) -> AsyncNodeConnection:
        target = self._routing.target(address)
        connection = self._connections.get(address)
        if connection is None or connection.target != target:
            connection = self._connections[address] = AsyncNodeConnection(
                address, target=target, settings=self.settings, on_unavailable=self.mark_unavailable)
        return connection

    def _new_session(self, *, namespace: str, key_groups: KeyGroupRange, epoch: int, connection: Any,
                     node_limits: NodeLimits, failure: WriterFailure) -> AsyncShardSession:
        return AsyncShardSession(namespace=namespace, key_groups=key_groups, epoch=epoch, connection=connection,
                                 limits=self.limits, node_limits=node_limits, failure=failure)

    def _new_writer(self, **parts: Any) -> AsyncWriter:
        return AsyncWriter(**parts)

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.close()

    async def __aenter__(self) -> AsyncStateClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

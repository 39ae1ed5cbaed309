"""AsyncWriter: the one asyncio client that owns a set of shards of a namespace at an epoch."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from stateserver.client._serializers import JSON, STR, Serializer
from stateserver.client._states import operand_serializer_for
from stateserver.client._failure import WriterFailure
from stateserver.client._writer import ShardRouter, awaiting_snapshots, state_descriptor
from stateserver.client.aio._session import AsyncShardSession
from stateserver.client.aio._states import AsyncAggregatingState, AsyncListState, AsyncMapState, AsyncValueState
from stateserver.protocol.states import StateDescriptor, StateKind
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import state_pb2 as pb


class AsyncWriter(ShardRouter[AsyncShardSession]):
    """Once a write batch fails, the writer is failed as a whole: every later call raises
    ``SessionFailedError`` (chained to the failure) until the writer is reopened with a restore."""

    def __init__(self, *, namespace: str, max_key_groups: int, epoch: int,
                 sessions: Sequence[AsyncShardSession], owner_id: str, failure: WriterFailure | None = None) -> None:
        self.namespace = namespace
        self.epoch = epoch
        self.owner_id = owner_id  # sent on every OpenShard of this writer: the node knows a reconnect by it
        super().__init__(max_key_groups=max_key_groups, sessions=sessions,
                         failure=failure or (sessions[0].failure if sessions else WriterFailure()))
        self.states: dict[str, StateDescriptor] = {}

    @property
    def outstanding(self) -> int:
        """Operations accepted and not yet answered, over all shards."""
        return sum(session.outstanding.in_use for session in self.sessions)

    # -- state handles -------------------------------------------------------------------

    async def value_state(self, name: str, *, key_serializer: Serializer[Any] = STR,
                          value_serializer: Serializer[Any] = JSON, ttl_ms: int = 0) -> AsyncValueState[Any, Any]:
        descriptor = await self._declare(state_descriptor(name=name, kind=StateKind.VALUE, ttl_ms=ttl_ms))
        return AsyncValueState(self, descriptor, key_serializer, value_serializer)

    async def list_state(self, name: str, *, key_serializer: Serializer[Any] = STR,
                         value_serializer: Serializer[Any] = JSON, ttl_ms: int = 0) -> AsyncListState[Any, Any]:
        descriptor = await self._declare(state_descriptor(name=name, kind=StateKind.LIST, ttl_ms=ttl_ms))
        return AsyncListState(self, descriptor, key_serializer, value_serializer)

    async def map_state(self, name: str, *, key_serializer: Serializer[Any] = STR,
                        map_key_serializer: Serializer[Any] = STR, value_serializer: Serializer[Any] = JSON,
                        ttl_ms: int = 0) -> AsyncMapState[Any, Any, Any]:
        descriptor = await self._declare(state_descriptor(name=name, kind=StateKind.MAP, ttl_ms=ttl_ms))
        return AsyncMapState(self, descriptor, key_serializer, map_key_serializer, value_serializer)

    async def aggregating_state(self, name: str, *, merge_operator: str, key_serializer: Serializer[Any] = STR,
                                element_serializer: Serializer[Any] | None = JSON,
                                ttl_ms: int = 0) -> AsyncAggregatingState[Any, Any]:
        """``sum_int64``, ``max_int64``, ``min_int64`` take ints; ``list_append`` takes elements."""
        descriptor = await self._declare(state_descriptor(name=name, kind=StateKind.AGGREGATING,
                                                         merge_operator=merge_operator, ttl_ms=ttl_ms))
        return AsyncAggregatingState(self, descriptor, key_serializer,
                                     operand_serializer_for(merge_operator, element_serializer))

    async def _declare(self, descriptor: StateDescriptor) -> StateDescriptor:
        self.failure.check()
        if self.states.get(descriptor.name) != descriptor:
            request_state = descriptor.to_proto()
            await self._on_every_shard("DeclareStates", lambda s: pb.DeclareStatesRequest(shard=s.ref, states=[request_state]))
            self.states[descriptor.name] = descriptor
        return descriptor

    async def _on_every_shard(self, method: str, request_for: Any) -> list[Any]:
        return list(await asyncio.gather(*(s.connection.call(method, request_for(s)) for s in self.sessions)))

    # -- batching and checkpoints ----------------------------------------------------------

    async def flush(self) -> None:
        """Wait until the nodes applied every write accepted so far."""
        self.failure.check()
        await asyncio.gather(*(session.flush() for session in self.sessions))

    async def snapshot(self, checkpoint_id: int) -> float:
        """The sync phase at the barrier: flush, then every shard takes its local checkpoint.
        Returns the longest sync pause in ms; uploads go on in the background on the nodes."""
        await self.flush()
        replies = await self._on_every_shard(
            "SnapshotShard", lambda s: cpb.SnapshotShardRequest(shard=s.ref, checkpoint_id=checkpoint_id))
        return max((reply.sync_millis for reply in replies), default=0.0)

    async def await_snapshot(self, checkpoint_id: int, *, timeout: float = 300.0) -> list[cpb.ShardSnapshotHandle]:
        """Wait until every shard's snapshot is durable; returns their handles for the commit."""
        self.failure.check()
        steps = awaiting_snapshots(self.sessions, checkpoint_id, timeout)
        try:
            session, request, rpc_timeout = next(steps)
            while True:
                reply = await session.connection.call("AwaitShardSnapshot", request, timeout=rpc_timeout)
                session, request, rpc_timeout = steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """The checkpoint is committed: its uploads may be reused by the next one."""
        self.failure.check()
        await self._on_every_shard("NotifyCheckpointComplete",
                                   lambda s: cpb.NotifyCheckpointRequest(shard=s.ref, checkpoint_id=checkpoint_id))

    async def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        await self._on_every_shard("NotifyCheckpointAborted",
                                   lambda s: cpb.NotifyCheckpointRequest(shard=s.ref, checkpoint_id=checkpoint_id))

    async def close(self) -> None:
        """Flush and release the shards (they stay on the node's disk)."""
        try:
            await self.flush()
            await self._on_every_shard("CloseShard", lambda s: pb.CloseShardRequest(shard=s.ref))
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

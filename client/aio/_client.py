"""AsyncStateClient: the asyncio client's connections, namespaces and writers."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from client._checkpoint_info import CheckpointInfo, checked_metadata, describe_request
from client._client import KeyGroups, Restore, _ranges, _restore_source
from client._errors import InvalidArgumentError, StateServerError, UnavailableError
from client._failure import WriterFailure
from client.aio._connection import AsyncNodeConnection
from client.aio._session import AsyncShardSession, CoalescingLimits
from client.aio._writer import AsyncWriter
from stateserver import placement
from stateserver.keygroups import KeyGroupRange
from stateserver.v1 import checkpoint_pb2 as cpb
from stateserver.v1 import state_pb2 as pb


class AsyncStateClient:
    """Talks to a cluster through the seed ``addresses``, from one asyncio event loop.

    A shard's node is the first node in its rendezvous placement order that this client has not
    found unreachable, computed as the sync client and the nodes compute it. ``limits`` says how
    requests to one shard are coalesced into batches and how many may be outstanding.
    """

    def __init__(self, addresses: Sequence[str] | str, *, timeout: float = 30.0, max_message_bytes: int = 64 << 20,
                 limits: CoalescingLimits | None = None) -> None:
        self.seeds = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.seeds:
            raise InvalidArgumentError("give at least one node address")
        self.nodes: list[str] = list(self.seeds)
        self.unavailable: set[str] = set()
        self.limits = limits or CoalescingLimits()
        self._timeout = timeout
        self._max_message_bytes = max_message_bytes
        self._connections: dict[str, AsyncNodeConnection] = {}
        self._refreshed = False

    def connection(self, address: str) -> AsyncNodeConnection:
        connection = self._connections.get(address)
        if connection is None:
            connection = self._connections[address] = AsyncNodeConnection(
                address, max_message_bytes=self._max_message_bytes, timeout=self._timeout,
                on_unavailable=self.unavailable.add)
        return connection

    async def refresh(self) -> list[str]:
        """Ask the nodes for the cluster's node list; returns it."""
        last_error: StateServerError | None = None
        for address in dict.fromkeys([*self.nodes, *self.seeds]):
            if address in self.unavailable:
                continue
            try:
                reply = await self.connection(address).node_info(timeout=min(self._timeout, 5.0))
            except StateServerError as exc:
                last_error = exc
                continue
            self.nodes, self._refreshed = (sorted(reply.nodes) if reply.nodes else list(self.seeds)), True
            return self.nodes
        raise UnavailableError(f"no node of {self.seeds} answered: {last_error}")

    async def node_for(self, shard_id: str) -> str:
        if not self._refreshed:
            await self.refresh()
        available = [node for node in placement.placement_order(shard_id, self.nodes) if node not in self.unavailable]
        if not available:
            raise UnavailableError(f"every node of shard {shard_id} is unavailable: {sorted(self.unavailable)}")
        return available[0]

    async def _any_node(self) -> AsyncNodeConnection:
        if not self._refreshed:
            await self.refresh()
        return self.connection(next(node for node in self.nodes if node not in self.unavailable))

    async def _call_any(self, method: str, request: object) -> Any:
        """``method`` on the first available node that answers: any node can serve it."""
        if not self._refreshed:
            await self.refresh()
        last_error: UnavailableError | None = None
        for node in [node for node in self.nodes if node not in self.unavailable]:
            try:
                return await self.connection(node).call(method, request)
            except UnavailableError as exc:
                last_error = exc
        raise last_error or UnavailableError(f"every node is unavailable: {sorted(self.unavailable)}")

    # -- namespaces ----------------------------------------------------------------------

    async def create_namespace(self, namespace: str, max_key_groups: int) -> int:
        """Create the namespace on every available node (idempotent); returns its key groups."""
        if not self._refreshed:
            await self.refresh()
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=max_key_groups)
        replies = await asyncio.gather(*(self.connection(node).call("CreateNamespace", request)
                                         for node in self.nodes if node not in self.unavailable))
        return max(reply.max_key_groups for reply in replies)

    async def max_key_groups(self, namespace: str) -> int:
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=0)
        return int((await (await self._any_node()).call("CreateNamespace", request)).max_key_groups)

    async def next_epoch(self, namespace: str) -> int:
        """A new writer epoch for ``namespace``, as ``StateClient.next_epoch``."""
        return int((await self._call_any("AllocateEpoch", cpb.AllocateEpochRequest(namespace=namespace))).epoch)

    # -- writers and checkpoints -----------------------------------------------------------

    async def open_writer(self, namespace: str, *, key_groups: KeyGroups, epoch: int,
                          restore: Restore = None) -> AsyncWriter:
        """Open one shard per key-group range as the writer at ``epoch``, fencing older writers.

        ``restore``, as for ``StateClient.open_writer``: a checkpoint id or ``"latest"`` gives
        exactly that checkpoint's state, ``"empty"`` nothing; None resumes the shards as they are
        where that is allowed, else raises ``RestoreRequiredError``."""
        source = _restore_source(restore) if restore is not None else None  # bad input before any call
        owner_id = uuid.uuid4().hex  # the same on every OpenShard of this writer
        max_key_groups = await self.max_key_groups(namespace)
        failure = WriterFailure()  # the writer's sessions fail together
        sessions = await asyncio.gather(*(self._open_session(namespace, max_key_groups, key_group_range, epoch, source,
                                                             owner_id, failure)
                                          for key_group_range in _ranges(key_groups)))
        return AsyncWriter(namespace=namespace, max_key_groups=max_key_groups, epoch=epoch, sessions=sessions,
                           owner_id=owner_id, failure=failure)

    async def _open_session(self, namespace: str, max_key_groups: int, key_groups: KeyGroupRange, epoch: int,
                            source: pb.RestoreSource | None, owner_id: str,
                            failure: WriterFailure) -> AsyncShardSession:
        connection = self.connection(await self.node_for(f"{namespace}/{key_groups}"))
        session = AsyncShardSession(namespace=namespace, key_groups=key_groups, epoch=epoch, connection=connection,
                                    limits=self.limits, node_limits=await connection.node_limits(), failure=failure)
        request = pb.OpenShardRequest(shard=session.ref, unavailable_nodes=sorted(self.unavailable), owner_id=owner_id)
        if source is not None:
            request.restore.CopyFrom(source)
        # A node that joined after the namespace was created learns it here.
        await connection.call("CreateNamespace", pb.CreateNamespaceRequest(namespace=namespace,
                                                                            max_key_groups=max_key_groups))
        await connection.call("OpenShard", request, timeout=max(self._timeout, 600.0))
        return session

    async def commit_checkpoint(self, namespace: str, checkpoint_id: int, handles: Sequence[cpb.ShardSnapshotHandle],
                                writers: Sequence[AsyncWriter] = (), *, metadata: bytes = b"") -> str:
        """Write the checkpoint's metadata (the commit point) once every shard snapshot is durable;
        ``metadata`` is the operator's own, as for ``StateClient.commit_checkpoint``."""
        refs = [session.ref for writer in writers for session in writer.sessions]
        request = cpb.CommitCheckpointRequest(namespace=namespace, checkpoint_id=checkpoint_id, shards=handles,
                                              writers=refs, operator_metadata=checked_metadata(metadata))
        return str((await (await self._any_node()).call("CommitCheckpoint", request)).metadata_key)

    async def checkpoint_metadata(self, namespace: str, checkpoint: int | str = "latest") -> CheckpointInfo:
        """A committed checkpoint's id and metadata, as ``StateClient.checkpoint_metadata``."""
        request = describe_request(namespace, checkpoint)
        return CheckpointInfo.from_proto(await self._call_any("DescribeCheckpoint", request))

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.close()

    async def __aenter__(self) -> AsyncStateClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

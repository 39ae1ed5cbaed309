"""AsyncStateClient: the asyncio client's connections, namespaces and writers."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from stateserver.client._checkpoint_info import CheckpointInfo, checked_metadata, describe_request
from stateserver.client._client import KeyGroups, Restore, _ranges, _restore_source
from stateserver.client._connection import is_unreachable
from stateserver.client._errors import InvalidArgumentError, StateServerError, UnavailableError, WrongNodeError
from stateserver.client._failure import WriterFailure
from stateserver.client.aio._connection import AsyncNodeConnection
from stateserver.client.aio._session import AsyncShardSession, CoalescingLimits
from stateserver.client._routing import RoutingTable
from stateserver.client._settings import ClientSettings, resolve_settings
from stateserver.client.aio._writer import AsyncWriter
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import state_pb2 as pb


class AsyncStateClient:
    """Talks to a cluster through the seed ``addresses``, from one asyncio event loop.

    A shard's node is the first node in its rendezvous placement order that this client has not
    found unreachable, computed as the sync client and the nodes compute it; the node list and the
    unreachable nodes heal as in ``StateClient`` (same ``ClientSettings``). ``limits`` says how
    requests to one shard are coalesced into batches and how many may be outstanding.
    """

    def __init__(self, addresses: Sequence[str] | str, *, settings: ClientSettings | None = None,
                 timeout: float | None = None, max_message_bytes: int | None = None,
                 limits: CoalescingLimits | None = None) -> None:
        self.seeds = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.seeds:
            raise InvalidArgumentError("give at least one node address")
        self.settings = resolve_settings(settings, timeout=timeout, max_message_bytes=max_message_bytes)
        self._routing = RoutingTable(self.seeds, probe_backoff_min=self.settings.probe_backoff_min,
                                     probe_backoff_max=self.settings.probe_backoff_max)
        self.limits = limits or CoalescingLimits()
        self._connections: dict[str, AsyncNodeConnection] = {}

    @property
    def nodes(self) -> list[str]:
        return self._routing.nodes

    @nodes.setter
    def nodes(self, nodes: Sequence[str]) -> None:
        self._routing.set_nodes(nodes)

    @property
    def unavailable(self) -> frozenset[str]:
        return self._routing.unavailable

    def mark_unavailable(self, address: str) -> None:
        self._routing.mark_unavailable(address)

    def connection(self, address: str) -> AsyncNodeConnection:
        target = self._routing.target(address)
        connection = self._connections.get(address)
        if connection is None or connection.target != target:
            connection = self._connections[address] = AsyncNodeConnection(
                address, target=target, settings=self.settings, on_unavailable=self.mark_unavailable)
        return connection

    async def refresh(self, *, forget_unavailable: bool = False) -> list[str]:
        """Ask the nodes for the cluster's node list; returns it (as ``StateClient.refresh``)."""
        if forget_unavailable:
            self._routing.forget_unavailable()
        last_error: StateServerError | None = None
        names = [*self._routing.available(), *self.seeds, *sorted(self._routing.unavailable)]
        for address in dict.fromkeys(names):
            try:
                reply = await self.connection(address).node_info(timeout=self.settings.connect_timeout)
            except StateServerError as exc:
                last_error = exc
                continue
            self._routing.mark_available(address)
            self._routing.update(list(reply.nodes), dict(reply.advertised_addresses))
            return self.nodes
        raise UnavailableError(f"no node of {self.seeds} answered: {last_error}")

    async def _heal(self) -> None:
        if self._routing.stale(self.settings.node_list_max_age):
            try:
                await self.refresh()
            except UnavailableError:
                if self._routing.refreshed_at is None:
                    raise
        for address in self._routing.due_for_probe():
            try:
                await self.connection(address).node_info(timeout=self.settings.connect_timeout)
            except StateServerError as exc:
                if not is_unreachable(exc):
                    self._routing.mark_unavailable(address)
                continue
            self._routing.mark_available(address)

    async def node_for(self, shard_id: str) -> str:
        await self._heal()
        order = self._routing.placement_order(shard_id)
        if not order:
            raise UnavailableError(f"every node of shard {shard_id} is unavailable: {sorted(self.unavailable)}")
        return order[0]

    async def _available(self) -> list[str]:
        await self._heal()
        available = self._routing.available()
        if not available:
            raise UnavailableError(f"every node is unavailable: {sorted(self.unavailable)}")
        return available

    async def _any_node(self) -> AsyncNodeConnection:
        return self.connection((await self._available())[0])

    async def _call_any(self, method: str, request: object) -> Any:
        """``method`` on the first available node that answers: any node can serve it."""
        last_error: UnavailableError | None = None
        for node in await self._available():
            try:
                return await self.connection(node).call(method, request)
            except UnavailableError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    # -- namespaces ----------------------------------------------------------------------

    async def create_namespace(self, namespace: str, max_key_groups: int) -> int:
        """Create the namespace on every available node (idempotent); returns its key groups."""
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=max_key_groups)
        outcomes = await asyncio.gather(*(self.connection(node).call("CreateNamespace", request)
                                          for node in await self._available()), return_exceptions=True)
        replies = [o for o in outcomes if not isinstance(o, BaseException)]
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, UnavailableError):
                raise outcome
        if not replies:
            raise next(o for o in outcomes if isinstance(o, BaseException))
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
        attempts = self.settings.retry_attempts
        for attempt in range(attempts):
            connection = self.connection(await self.node_for(f"{namespace}/{key_groups}"))
            try:
                session = AsyncShardSession(namespace=namespace, key_groups=key_groups, epoch=epoch,
                                            connection=connection, limits=self.limits,
                                            node_limits=await connection.node_limits(), failure=failure)
                request = pb.OpenShardRequest(shard=session.ref, unavailable_nodes=sorted(self.unavailable),
                                              owner_id=owner_id)
                if source is not None:
                    request.restore.CopyFrom(source)
                # A node that joined after the namespace was created learns it here.
                await connection.call("CreateNamespace", pb.CreateNamespaceRequest(namespace=namespace,
                                                                                    max_key_groups=max_key_groups))
                await connection.call("OpenShard", request, timeout=self.settings.open_timeout)
                return session
            except WrongNodeError:
                if attempt == attempts - 1:
                    raise
                await self._refresh_quietly()
            except UnavailableError as exc:
                if attempt == attempts - 1 or not is_unreachable(exc):
                    raise
                await self._refresh_quietly()
            await asyncio.sleep(self.settings.backoff(attempt))
        raise AssertionError("unreachable")

    async def _refresh_quietly(self) -> None:
        if not self._routing.pinned:
            try:
                await self.refresh()
            except UnavailableError:
                pass

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

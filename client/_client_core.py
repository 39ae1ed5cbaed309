"""The client without I/O: seeds, settings, the routing table, and every cluster operation as a plan.

``StateClient`` and ``AsyncStateClient`` inherit these operations and differ only in how they run
a plan (``_run``: blocking calls and threads, or grpc.aio and tasks), in the connections and
sessions they make, and in what they add on top (the sync client's ``reopen`` and ``rebalance``).
"""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from stateserver.client._checkpoint_info import CheckpointInfo, checked_metadata, describe_request
from stateserver.client._errors import InvalidArgumentError, StateServerError, UnavailableError, WrongNodeError
from stateserver.client._failure import WriterFailure
from stateserver.client._plans import Call, Concurrently, Each, Plan, Sleep, settled
from stateserver.client._routing import RoutingTable
from stateserver.client._settings import ClientSettings, resolve_settings
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.states import StateDescriptor
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import state_pb2 as pb

KeyGroups = KeyGroupRange | str | Sequence[KeyGroupRange | str]
# A checkpoint id, "latest", "empty", or None (resume the shards as they are, where allowed).
Restore = int | Literal["latest", "empty"] | None


def is_unreachable(error: StateServerError) -> bool:
    """The node could not be reached (down, restarting, draining), as opposed to a node that
    answered UNAVAILABLE itself (its object store is out, say) and is very much there."""
    return error.code is not None and error.code.name == "UNAVAILABLE" and not error.reason


class ClientCore:
    """What both clients share; the operations return what the face's ``_run`` returns."""

    def __init__(self, addresses: Sequence[str] | str, *, settings: ClientSettings | None,
                 timeout: float | None, max_message_bytes: int | None) -> None:
        self.seeds = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.seeds:
            raise InvalidArgumentError("give at least one node address")
        self.settings = resolve_settings(settings, timeout=timeout, max_message_bytes=max_message_bytes)
        self._routing = RoutingTable(self.seeds, probe_backoff_min=self.settings.probe_backoff_min,
                                     probe_backoff_max=self.settings.probe_backoff_max)
        self._connections: dict[str, Any] = {}
        # One refresh of a stale list, one new connection at a time (the sync face's threads, which
        # open shards at the same time); the asyncio face needs no lock.
        self._refresh_guard: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._connections_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()

    # -- the face's ---------------------------------------------------------------------

    def _run(self, plan: Plan) -> Any:
        raise NotImplementedError

    _connection_type: Any  # the face's connection class
    _session_type: Any  # the face's shard session class
    _session_limits: Any  # the batching limits the face's sessions take
    _writer_type: Any  # the face's writer class

    def connection(self, address: str) -> Any:
        """The connection to the node called ``address``, dialled at the address it advertises."""
        target = self._routing.target(address)
        connection = self._connections.get(address)
        if connection is None or connection.target != target:
            with self._connections_lock:
                connection = self._connections.get(address)
                if connection is None or connection.target != target:
                    connection = self._connections[address] = self._connection_type(
                        address, target=target, settings=self.settings, on_unavailable=self.mark_unavailable)
        return connection

    def _connect(self, via: Any) -> Any:
        """A plan's call goes to a connection, or to a node by name."""
        return self.connection(via) if isinstance(via, str) else via

    # -- the cluster --------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """The cluster's node names, as placement uses them."""
        return self._routing.nodes

    @nodes.setter
    def nodes(self, nodes: Sequence[str]) -> None:
        """Route by this list (the operator's own) instead of the one the nodes report, until ``refresh()``."""
        self._routing.set_nodes(nodes)

    @property
    def unavailable(self) -> frozenset[str]:
        """Nodes routed around now; each is probed again after its backoff."""
        return self._routing.unavailable

    def mark_unavailable(self, address: str) -> None:
        """Route around ``address`` until a probe finds it again (after a backoff)."""
        self._routing.mark_unavailable(address)

    def refresh(self, *, forget_unavailable: bool = False) -> Any:
        """Ask the nodes for the cluster's node list (and where to dial each); returns it.

        Nodes found unreachable are asked last, and one that answers is available again."""
        return self._run(self._refresh(forget_unavailable))

    def _refresh(self, forget_unavailable: bool = False) -> Plan:
        if forget_unavailable:
            self._routing.forget_unavailable()
        last_error: StateServerError | None = None
        names = [*self._routing.available(), *self.seeds, *sorted(self._routing.unavailable)]
        for address in dict.fromkeys(names):
            try:
                reply = yield from self.connection(address).learn_node_info(self.settings.connect_timeout)
            except StateServerError as exc:
                last_error = exc
                continue
            self._routing.mark_available(address)
            self._routing.update(list(reply.nodes), dict(reply.advertised_addresses))
            return self.nodes
        raise UnavailableError(f"no node of {self.seeds} answered: {last_error}")

    def _heal(self) -> Plan:
        """Refresh a stale node list, and probe the unreachable nodes whose backoff has passed."""
        max_age = self.settings.node_list_max_age
        if self._routing.stale(max_age):
            with self._refresh_guard:
                if self._routing.stale(max_age):
                    try:
                        yield from self._refresh()
                    except UnavailableError:
                        if self._routing.refreshed_at is None:
                            raise  # never learnt the cluster: nothing to route by
        for address in self._routing.due_for_probe(reserve_for=self.settings.connect_timeout):
            try:
                yield from self.connection(address).learn_node_info(self.settings.connect_timeout)
            except StateServerError as exc:
                if not is_unreachable(exc):  # unreachable ones were marked again by the connection
                    self._routing.mark_unavailable(address)
                continue
            self._routing.mark_available(address)

    def node_for(self, shard_id: str) -> Any:
        return self._run(self._node_for(shard_id))

    def _node_for(self, shard_id: str) -> Plan:
        yield from self._heal()
        order = self._routing.placement_order(shard_id)
        if not order:
            raise UnavailableError(f"every node of shard {shard_id} is unavailable: {sorted(self.unavailable)}")
        return order[0]

    def _available(self) -> Plan:
        """The nodes to use now; raises ``UnavailableError`` when there is none."""
        yield from self._heal()
        available = self._routing.available()
        if not available:
            raise UnavailableError(f"every node is unavailable: {sorted(self.unavailable)}")
        return available

    def _call_any(self, method: str, request: object) -> Plan:
        """``method`` on the first available node that answers: any node can serve it."""
        last_error: UnavailableError | None = None
        for address in (yield from self._available()):
            try:
                return (yield Call(address, method, request))
            except UnavailableError as exc:
                last_error = exc  # the next node is asked
        assert last_error is not None
        raise last_error

    def _call_first(self, method: str, request: object) -> Plan:
        return (yield Call((yield from self._available())[0], method, request))

    # -- namespaces and epochs -----------------------------------------------------------

    def create_namespace(self, namespace: str, max_key_groups: int) -> Any:
        """Create the namespace on every available node (idempotent); returns its key groups."""
        return self._run(self._create_namespace(namespace, max_key_groups))

    def _create_namespace(self, namespace: str, max_key_groups: int) -> Plan:
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=max_key_groups)
        outcomes = yield Each([Call(address, "CreateNamespace", request) for address in (yield from self._available())],
                              settle=True)
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for error in errors:
            if not isinstance(error, UnavailableError):
                raise error
        replies = settled(outcomes)
        if not replies:
            raise errors[0] if errors else UnavailableError("no node to ask")
        return max(reply.max_key_groups for reply in replies)

    def max_key_groups(self, namespace: str) -> Any:
        return self._run(self._max_key_groups(namespace))

    def _max_key_groups(self, namespace: str) -> Plan:
        reply = yield from self._call_any("CreateNamespace", pb.CreateNamespaceRequest(namespace=namespace))
        return int(reply.max_key_groups)

    def next_epoch(self, namespace: str) -> Any:
        """A new writer epoch for ``namespace``, higher than every epoch used for it so far
        (allocated ones and those of any writer that opened a shard), never handed out twice, kept
        in the snapshot store so it survives every restart. Explicit epochs still work everywhere."""
        return self._run(self._next_epoch(namespace))

    def _next_epoch(self, namespace: str) -> Plan:
        reply = yield from self._call_any("AllocateEpoch", cpb.AllocateEpochRequest(namespace=namespace))
        return int(reply.epoch)

    # -- writers -------------------------------------------------------------------------

    def open_writer(self, namespace: str, *, key_groups: KeyGroups, epoch: int, restore: Restore = None) -> Any:
        """Open one shard per key-group range as the writer at ``epoch``, fencing older writers.

        ``restore`` says where the shards' state comes from:

        - a checkpoint id or ``"latest"``: exactly their key groups of that committed checkpoint,
          whatever the parallelism it was taken at;
        - ``"empty"``: nothing (a fresh start), whatever the nodes or earlier owners held;
        - None: the key groups as they are, allowed only when that is exactly their state: the
          namespace's first open ever, or a shard this same writer closed cleanly (see
          ``reopen``). Otherwise the open raises ``RestoreRequiredError`` and changes nothing.

        After a node failure, open again with a higher epoch and ``restore="latest"``: shards of
        the lost node go to the next node in their placement order.
        """
        ranges = key_group_ranges(key_groups)
        source = restore_source(restore) if restore is not None else None  # bad input before any call
        return self._run(self._open_writer(namespace, ranges, epoch, source, uuid.uuid4().hex))

    def _open_writer(self, namespace: str, ranges: list[KeyGroupRange], epoch: int,
                     source: pb.RestoreSource | None, owner_id: str) -> Plan:
        max_key_groups = yield from self._max_key_groups(namespace)
        failure = WriterFailure()  # the writer's sessions fail together
        sessions = yield from self._open_sessions(namespace, max_key_groups, ranges, epoch, source, owner_id, [],
                                                  failure)
        return self._writer_type(namespace=namespace, max_key_groups=max_key_groups, epoch=epoch, sessions=sessions,
                                 owner_id=owner_id, failure=failure)

    def _open_sessions(self, namespace: str, max_key_groups: int, ranges: Sequence[KeyGroupRange], epoch: int,
                       source: pb.RestoreSource | None, owner_id: str, states: Sequence[StateDescriptor],
                       failure: WriterFailure) -> Plan:
        # Shards open at the same time: with a restore, each downloads its snapshot on its node.
        return (yield Concurrently([self._open_session(namespace, max_key_groups, r, epoch, source, owner_id, states,
                                                       failure) for r in ranges]))

    def _open_session(self, namespace: str, max_key_groups: int, key_groups: KeyGroupRange, epoch: int,
                      source: pb.RestoreSource | None, owner_id: str,
                      states: Sequence[StateDescriptor], failure: WriterFailure) -> Plan:
        attempts = self.settings.retry_attempts
        for attempt in range(attempts):
            connection = self.connection((yield from self._node_for(f"{namespace}/{key_groups}")))
            try:
                node_limits = yield from connection.learn_limits()  # asked once per node
                session = self._session_type(namespace=namespace, key_groups=key_groups, epoch=epoch,
                                             connection=connection, limits=self._session_limits,
                                             node_limits=node_limits, failure=failure)
                session.core.use_stored_form(max_key_groups)
                request = pb.OpenShardRequest(shard=session.ref, unavailable_nodes=sorted(self.unavailable),
                                              owner_id=owner_id, states=[s.to_proto() for s in states])
                if source is not None:
                    request.restore.CopyFrom(source)
                # A node that joined after the namespace was created learns it here.
                yield Call(connection, "CreateNamespace",
                           pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=max_key_groups))
                yield Call(connection, "OpenShard", request, self.settings.open_timeout)
                return session
            except WrongNodeError:
                if attempt == attempts - 1:
                    raise
                yield from self._refresh_quietly()  # the node knows a newer node list
            except UnavailableError as exc:
                if attempt == attempts - 1 or not is_unreachable(exc):
                    raise
                yield from self._refresh_quietly()  # the node is gone: route around it, and ask who is left
            yield Sleep(self.settings.backoff(attempt))
        raise AssertionError("unreachable")

    def _refresh_quietly(self) -> Plan:
        if not self._routing.pinned:
            try:
                yield from self._refresh()
            except UnavailableError:
                pass  # the next attempt says what is wrong

    # -- checkpoints ---------------------------------------------------------------------

    def commit_checkpoint(self, namespace: str, checkpoint_id: int, handles: Sequence[cpb.ShardSnapshotHandle],
                          writers: Sequence[Any] = (), *, metadata: bytes = b"") -> Any:
        """Write the checkpoint's metadata (the commit point) once every shard snapshot is durable.

        ``metadata`` is the operator's own (source offsets, watermarks; at most 1 MiB), committed
        with the checkpoint and returned by ``checkpoint_metadata``.
        """
        refs = [session.ref for writer in writers for session in writer.sessions]
        request = cpb.CommitCheckpointRequest(namespace=namespace, checkpoint_id=checkpoint_id, shards=handles,
                                              writers=refs, operator_metadata=checked_metadata(metadata))
        return self._run(self._commit(request))

    def _commit(self, request: cpb.CommitCheckpointRequest) -> Plan:
        return str((yield from self._call_first("CommitCheckpoint", request)).metadata_key)

    def checkpoint_metadata(self, namespace: str, checkpoint: int | str = "latest") -> Any:
        """A committed checkpoint's id and the metadata committed with it (``"latest"`` or an id);
        ``NotFoundError`` when there is none."""
        request = describe_request(namespace, checkpoint)  # bad input before any call
        return self._run(self._describe(request))

    def _describe(self, request: cpb.DescribeCheckpointRequest) -> Plan:
        return CheckpointInfo.from_proto((yield from self._call_any("DescribeCheckpoint", request)))


def restore_source(restore: int | str) -> pb.RestoreSource:
    if restore == "latest":
        return pb.RestoreSource(latest=True)
    if restore == "empty":
        return pb.RestoreSource(empty=True)
    if isinstance(restore, int) and not isinstance(restore, bool) and restore > 0:
        return pb.RestoreSource(checkpoint_id=restore)
    raise InvalidArgumentError(f"restore takes a checkpoint id (from 1), 'latest' or 'empty', not {restore!r}")


def key_group_ranges(key_groups: KeyGroups) -> list[KeyGroupRange]:
    items = [key_groups] if isinstance(key_groups, (KeyGroupRange, str)) else list(key_groups)
    try:
        return [item if isinstance(item, KeyGroupRange) else KeyGroupRange.parse(item) for item in items]
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None

"""StateClient: connections to the nodes of a cluster, namespaces, writers, failover."""
from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal


from stateserver.client._checkpoint_info import CheckpointInfo, checked_metadata, describe_request
from stateserver.client._connection import NodeConnection, PendingCall, is_unreachable
from stateserver.client._errors import (
    InvalidArgumentError, RestoreRequiredError, StateServerError, UnavailableError, WrongNodeError,
)
from stateserver.client._failure import WriterFailure
from stateserver.client._routing import RoutingTable
from stateserver.client._settings import ClientSettings, resolve_settings
from stateserver.client._shard_session import BatchLimits, ShardSession
from stateserver.client._writer import Writer
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.states import StateDescriptor
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import state_pb2 as pb

KeyGroups = KeyGroupRange | str | Sequence[KeyGroupRange | str]
# A checkpoint id, "latest", "empty", or None (resume the shards as they are, where allowed).
Restore = int | Literal["latest", "empty"] | None
_OPENS_AT_ONCE = 8


class StateClient:
    """Talks to a cluster through the seed ``addresses``.

    A shard's node is the first node in its rendezvous placement order that this client has
    not found unreachable; nodes and clients compute that order alike, so no lookup service
    is needed. The node list comes from the nodes themselves (NodeInfo), again whenever it is
    older than ``settings.node_list_max_age``, on ``WrongNodeError`` and before a rebalance; a
    node that cannot be reached is routed around and probed again after a backoff, so a
    restarted node is used again once it serves. Connection settings: ``settings``
    (``ClientSettings``); ``timeout`` and ``max_message_bytes`` override its request timeout and
    message size.
    """

    def __init__(self, addresses: Sequence[str] | str, *, settings: ClientSettings | None = None,
                 timeout: float | None = None, max_message_bytes: int | None = None,
                 batch_ops: int = 1000, batch_bytes: int = 4 << 20, max_in_flight: int = 4,
                 busy_batch_ops: int | None = None) -> None:
        self.seeds = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.seeds:
            raise InvalidArgumentError("give at least one node address")
        self.settings = resolve_settings(settings, timeout=timeout, max_message_bytes=max_message_bytes)
        self._routing = RoutingTable(self.seeds, probe_backoff_min=self.settings.probe_backoff_min,
                                     probe_backoff_max=self.settings.probe_backoff_max)
        # While the node is still applying every batch in flight, the next batch grows up to
        # busy_batch_ops (default 4 x batch_ops) instead of waiting (see BatchLimits).
        self._batch_limits = BatchLimits(max_ops=batch_ops, max_bytes=batch_bytes, max_in_flight=max_in_flight,
                                         max_ops_when_busy=max(busy_batch_ops or 4 * batch_ops, batch_ops))
        self._connections: dict[str, NodeConnection] = {}
        self._connections_lock = threading.Lock()  # shards open from several threads at once
        self._refresh_lock = threading.Lock()  # one refresh of a stale list, not one per opening thread

    # -- the cluster -------------------------------------------------------------------

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

    def connection(self, address: str) -> NodeConnection:
        """The connection to the node called ``address``, dialled at the address it advertises."""
        target = self._routing.target(address)
        connection = self._connections.get(address)
        if connection is None or connection.target != target:
            with self._connections_lock:
                connection = self._connections.get(address)
                if connection is None or connection.target != target:
                    connection = self._connections[address] = NodeConnection(
                        address, target=target, settings=self.settings, on_unavailable=self.mark_unavailable)
        return connection

    def mark_unavailable(self, address: str) -> None:
        """Route around ``address`` until a probe finds it again (after a backoff)."""
        self._routing.mark_unavailable(address)

    def refresh(self, *, forget_unavailable: bool = False) -> list[str]:
        """Ask the nodes for the cluster's node list (and where to dial each); returns it.

        Nodes found unreachable are asked last, and one that answers is available again."""
        if forget_unavailable:
            self._routing.forget_unavailable()
        last_error: StateServerError | None = None
        down = self._routing.unavailable
        names = [*self._routing.available(), *self.seeds, *sorted(down)]
        for address in dict.fromkeys(names):
            try:
                reply = self.connection(address).node_info(timeout=self.settings.connect_timeout)
            except StateServerError as exc:
                last_error = exc
                continue
            self._routing.mark_available(address)
            self._routing.update(list(reply.nodes), dict(reply.advertised_addresses))
            return self.nodes
        raise UnavailableError(f"no node of {self.seeds} answered: {last_error}")

    def _heal(self) -> None:
        """Refresh a stale node list, and probe the unreachable nodes whose backoff has passed."""
        if self._routing.stale(self.settings.node_list_max_age):
            with self._refresh_lock:
                if self._routing.stale(self.settings.node_list_max_age):
                    try:
                        self.refresh()
                    except UnavailableError:
                        if self._routing.refreshed_at is None:
                            raise  # never learnt the cluster: nothing to route by
        for address in self._routing.due_for_probe():
            try:
                self.connection(address).node_info(timeout=self.settings.connect_timeout)
            except StateServerError as exc:
                if not is_unreachable(exc):  # unreachable ones were marked again by the connection
                    self._routing.mark_unavailable(address)
                continue
            self._routing.mark_available(address)

    def node_for(self, shard_id: str) -> str:
        self._heal()
        order = self._routing.placement_order(shard_id)
        if not order:
            raise UnavailableError(f"every node of shard {shard_id} is unavailable: {sorted(self.unavailable)}")
        return order[0]

    def _available(self) -> list[str]:
        """The nodes to use now; raises ``UnavailableError`` when there is none."""
        self._heal()
        available = self._routing.available()
        if not available:
            raise UnavailableError(f"every node is unavailable: {sorted(self.unavailable)}")
        return available

    def _call_any(self, method: str, request: object) -> Any:
        """``method`` on the first available node that answers: any node can serve it."""
        last_error: UnavailableError | None = None
        for address in self._available():
            try:
                return self.connection(address).call(method, request)
            except UnavailableError as exc:
                last_error = exc  # the next node is asked
        assert last_error is not None
        raise last_error

    # -- namespaces ----------------------------------------------------------------------

    def create_namespace(self, namespace: str, max_key_groups: int) -> int:
        """Create the namespace on every available node (idempotent); returns its key groups."""
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=max_key_groups)
        pending = [self.connection(address).start("CreateNamespace", request) for address in self._available()]
        return max(reply.max_key_groups for reply in _gather(pending))

    def max_key_groups(self, namespace: str) -> int:
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=0)
        return int(self.connection(self._available()[0]).call("CreateNamespace", request).max_key_groups)

    # -- epochs --------------------------------------------------------------------------

    def next_epoch(self, namespace: str) -> int:
        """A new writer epoch for ``namespace``, higher than every epoch used for it so far
        (allocated ones and those of any writer that opened a shard), never handed out twice, kept
        in the snapshot store so it survives every restart. Explicit epochs still work everywhere."""
        return int(self._call_any("AllocateEpoch", cpb.AllocateEpochRequest(namespace=namespace)).epoch)

    # -- writers -------------------------------------------------------------------------

    def open_writer(self, namespace: str, *, key_groups: KeyGroups, epoch: int,
                    restore: Restore = None) -> Writer:
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
        return self._open_writer(namespace, _ranges(key_groups), epoch, restore, owner_id=uuid.uuid4().hex)

    def reopen(self, writer: Writer, *, restore: Restore = None, epoch: int | None = None) -> Writer:
        """Open ``writer``'s shards again as the same owner at the same epoch, in place.

        Without ``restore`` this resumes each shard as its node holds it: a reconnect, or a node
        that was stopped gracefully and restarted (its shards were closed cleanly). A node that
        crashed has no clean copy: that raises ``RestoreRequiredError``; reopen with a checkpoint.
        Nothing buffered in the writer is sent first; state handles stay valid.

        With a new ``epoch`` (higher than the writer's; needs a ``restore``) the writer becomes a
        new owner at that epoch, on the nodes that own its shards now, fencing the old epoch: a
        recovery that keeps the operator's state handles.
        """
        if epoch is not None and epoch != writer.epoch:
            if restore is None:
                raise InvalidArgumentError("a reopen at a new epoch needs a restore (a checkpoint id, 'latest' or 'empty')")
            if epoch < writer.epoch:
                raise InvalidArgumentError(f"epoch {epoch} is older than the writer's {writer.epoch}")
            owner_id = uuid.uuid4().hex  # a new owner: nothing of the old epoch's sessions is resumed
            sessions = self._open_sessions(writer.namespace, writer.max_key_groups, writer.key_groups, epoch, restore,
                                           owner_id, list(writer.states.values()), WriterFailure())
            writer.owner_id = owner_id
            writer.replace_sessions(sessions, epoch)
            return writer
        if restore is None and writer.failure.failed:
            raise RestoreRequiredError(f"a write batch of this writer failed ({writer.failure.cause}); "
                                       "reopen it from a checkpoint (restore=...)") from writer.failure.cause
        # A restore starts a new session: the writer's failure, if any, stays with the old one.
        failure = WriterFailure() if restore is not None else writer.failure
        reopened = self._open_sessions(writer.namespace, writer.max_key_groups, writer.key_groups, writer.epoch,
                                       restore, writer.owner_id, list(writer.states.values()), failure)
        writer.replace_sessions(reopened, writer.epoch)
        return writer

    def _open_writer(self, namespace: str, ranges: list[KeyGroupRange], epoch: int, restore: Restore,
                     *, owner_id: str) -> Writer:
        max_key_groups = self.max_key_groups(namespace)
        failure = WriterFailure()  # the writer's sessions fail together
        sessions = self._open_sessions(namespace, max_key_groups, ranges, epoch, restore, owner_id, [], failure)
        return Writer(namespace=namespace, max_key_groups=max_key_groups, epoch=epoch, sessions=sessions,
                      owner_id=owner_id, failure=failure)

    def _open_sessions(self, namespace: str, max_key_groups: int, ranges: Sequence[KeyGroupRange], epoch: int,
                       restore: Restore, owner_id: str, states: Sequence[StateDescriptor],
                       failure: WriterFailure) -> list[ShardSession]:
        source = _restore_source(restore) if restore is not None else None  # bad input before any call
        # Shards open at the same time: with a restore, each downloads its snapshot on its node.
        with concurrent.futures.ThreadPoolExecutor(min(len(ranges), _OPENS_AT_ONCE) or 1,
                                                   thread_name_prefix="open-shard") as pool:
            sessions = list(pool.map(
                lambda r: self._open_session(namespace, max_key_groups, r, epoch, source, owner_id, states,
                                             failure), ranges))
        for session in sessions:
            session.reset_sequence()
        return sessions

    def _open_session(self, namespace: str, max_key_groups: int, key_groups: KeyGroupRange, epoch: int,
                      source: pb.RestoreSource | None, owner_id: str,
                      states: Sequence[StateDescriptor], failure: WriterFailure) -> ShardSession:
        shard_id = f"{namespace}/{key_groups}"
        attempts = self.settings.retry_attempts
        for attempt in range(attempts):
            connection = self.connection(self.node_for(shard_id))
            session = ShardSession(namespace=namespace, key_groups=key_groups, epoch=epoch, connection=connection,
                                   limits=self._batch_limits, failure=failure)
            request = pb.OpenShardRequest(shard=session.ref, unavailable_nodes=sorted(self.unavailable),
                                          owner_id=owner_id, states=[s.to_proto() for s in states])
            if source is not None:
                request.restore.CopyFrom(source)
            try:
                session.use_node_limits(connection.node_limits())  # asked once per node
                # A node that joined after the namespace was created learns it here.
                connection.call("CreateNamespace",
                                pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=max_key_groups))
                connection.call("OpenShard", request, timeout=self.settings.open_timeout)
                return session
            except WrongNodeError:
                if attempt == attempts - 1:
                    raise
                self._refresh_quietly()  # the node knows a newer node list
            except UnavailableError as exc:
                if attempt == attempts - 1 or not is_unreachable(exc):
                    raise
                self._refresh_quietly()  # the node is gone: route around it, and ask who is left
            time.sleep(self.settings.backoff(attempt))
        raise AssertionError("unreachable")

    def _refresh_quietly(self) -> None:
        if not self._routing.pinned:
            try:
                self.refresh()
            except UnavailableError:
                pass  # the next attempt says what is wrong

    def rebalance(self, writer: Writer, *, checkpoint_id: int, epoch: int) -> list[KeyGroupRange]:
        """Hand shards over after the node list changed, right after ``checkpoint_id`` committed.

        Every shard is reopened at ``epoch`` (higher than the writer's), restored from that
        checkpoint: shards whose placement moved on their new node, the others where they are
        (their local copies belong to the old epoch). The new epoch fences the old copies, and
        the moved ones are released on their old node. Nothing written after the checkpoint
        may be pending: call it at the checkpoint boundary. The writer and its state handles go
        on; returns the key-group ranges that moved.
        """
        writer.flush()
        if not self._routing.pinned:
            self.refresh()  # the nodes know the current membership
        moved = {s.key_groups for s in writer.sessions if self.node_for(s.shard_id) != s.connection.address}
        sessions = self._open_sessions(writer.namespace, writer.max_key_groups, writer.key_groups, epoch,
                                       checkpoint_id, writer.owner_id, list(writer.states.values()),
                                       WriterFailure())
        for old in writer.sessions:
            if old.key_groups in moved:
                try:
                    old.connection.call("CloseShard", pb.CloseShardRequest(shard=old.ref))
                except StateServerError:
                    pass  # fenced or gone: the old copy is dead either way
        writer.replace_sessions(sessions, epoch)
        return sorted(moved)

    # -- checkpoints ---------------------------------------------------------------------

    def commit_checkpoint(self, namespace: str, checkpoint_id: int, handles: Sequence[cpb.ShardSnapshotHandle],
                          writers: Sequence[Writer] = (), *, metadata: bytes = b"") -> str:
        """Write the checkpoint's metadata (the commit point) once every shard snapshot is durable.

        ``metadata`` is the operator's own (source offsets, watermarks; at most 1 MiB), committed
        with the checkpoint and returned by ``checkpoint_metadata``.
        """
        refs = [session.ref for writer in writers for session in writer.sessions]
        request = cpb.CommitCheckpointRequest(namespace=namespace, checkpoint_id=checkpoint_id, shards=handles,
                                              writers=refs, operator_metadata=checked_metadata(metadata))
        return str(self.connection(self._available()[0]).call("CommitCheckpoint", request).metadata_key)

    def checkpoint_metadata(self, namespace: str, checkpoint: int | str = "latest") -> CheckpointInfo:
        """A committed checkpoint's id and the metadata committed with it (``"latest"`` or an id);
        ``NotFoundError`` when there is none."""
        request = describe_request(namespace, checkpoint)  # bad input before any call
        return CheckpointInfo.from_proto(self._call_any("DescribeCheckpoint", request))

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _gather(pending: Sequence[PendingCall[object]]) -> list:  # type: ignore[type-arg]
    """Results of the calls that answered; raises if none did."""
    results, errors = [], []
    for call in pending:
        try:
            results.append(call.result())
        except UnavailableError as exc:
            errors.append(exc)
    if not results:
        raise errors[0] if errors else UnavailableError("no node to ask")
    return results


def _restore_source(restore: int | str) -> pb.RestoreSource:
    if restore == "latest":
        return pb.RestoreSource(latest=True)
    if restore == "empty":
        return pb.RestoreSource(empty=True)
    if isinstance(restore, int) and not isinstance(restore, bool) and restore > 0:
        return pb.RestoreSource(checkpoint_id=restore)
    raise InvalidArgumentError(f"restore takes a checkpoint id (from 1), 'latest' or 'empty', not {restore!r}")


def _ranges(key_groups: KeyGroups) -> list[KeyGroupRange]:
    items = [key_groups] if isinstance(key_groups, (KeyGroupRange, str)) else list(key_groups)
    try:
        return [item if isinstance(item, KeyGroupRange) else KeyGroupRange.parse(item) for item in items]
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None

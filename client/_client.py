"""StateClient (sync face): connections to the nodes of a cluster, namespaces, writers, failover.

Its cluster operations are ``ClientCore``'s plans, run with blocking calls (and threads where
shards open at the same time); reopening and rebalancing a writer are the sync client's own.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

from stateserver.client._client_core import ClientCore, KeyGroups, Restore, key_group_ranges, restore_source
from stateserver.client._connection import NodeConnection, run_plan
from stateserver.client._errors import InvalidArgumentError, RestoreRequiredError, StateServerError
from stateserver.client._failure import WriterFailure
from stateserver.client._plans import Plan
from stateserver.client._settings import ClientSettings
from stateserver.client._shard_session import BatchLimits, ShardSession
from stateserver.client._writer import Writer
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.v1 import state_pb2 as pb

__all__ = ["KeyGroups", "Restore", "StateClient", "key_group_ranges"]


class StateClient(ClientCore):
    _connection_type = NodeConnection
    _writer_type = Writer
    _session_type = ShardSession

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
                 batch_ops: int = 4000, batch_bytes: int = 4 << 20, max_in_flight: int = 4,
                 busy_batch_ops: int | None = None) -> None:
        super().__init__(addresses, settings=settings, timeout=timeout, max_message_bytes=max_message_bytes)
        # While the node is still applying every batch in flight, the next batch grows up to
        # busy_batch_ops (default 4 x batch_ops) instead of waiting (see BatchLimits).
        self._session_limits = BatchLimits(max_ops=batch_ops, max_bytes=batch_bytes, max_in_flight=max_in_flight,
                                         max_ops_when_busy=max(busy_batch_ops or 4 * batch_ops, batch_ops))
        self._connections_lock = threading.Lock()
        self._refresh_guard = threading.Lock()

    def _run(self, plan: Plan) -> Any:
        return run_plan(plan, self._connect)

    # -- writers again -------------------------------------------------------------------

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
            sessions = self._reopen_sessions(writer, epoch, restore, owner_id, WriterFailure())
            writer.owner_id = owner_id
            writer.replace_sessions(sessions, epoch)
            return writer
        if restore is None and writer.failure.failed:
            raise RestoreRequiredError(f"a write batch of this writer failed ({writer.failure.cause}); "
                                       "reopen it from a checkpoint (restore=...)") from writer.failure.cause
        # A restore starts a new session: the writer's failure, if any, stays with the old one.
        failure = WriterFailure() if restore is not None else writer.failure
        writer.replace_sessions(self._reopen_sessions(writer, writer.epoch, restore, writer.owner_id, failure),
                                writer.epoch)
        return writer

    def _reopen_sessions(self, writer: Writer, epoch: int, restore: Restore, owner_id: str,
                         failure: WriterFailure) -> list[ShardSession]:
        source = restore_source(restore) if restore is not None else None  # bad input before any call
        return self._run(self._open_sessions(writer.namespace, writer.max_key_groups, writer.key_groups,  # type: ignore[no-any-return]
                                             epoch, source, owner_id, list(writer.states.values()), failure))

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
        sessions = self._reopen_sessions(writer, epoch, checkpoint_id, writer.owner_id, WriterFailure())
        for old in writer.sessions:
            if old.key_groups in moved:
                try:
                    old.connection.call("CloseShard", pb.CloseShardRequest(shard=old.ref))
                except StateServerError:
                    pass  # fenced or gone: the old copy is dead either way
        writer.replace_sessions(sessions, epoch)
        return sorted(moved)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_ranges = key_group_ranges  # the name client.checkpointing imports

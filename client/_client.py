"""StateClient: connections to the nodes of a cluster, namespaces, and writers."""
from __future__ import annotations

from collections.abc import Sequence

from client._connection import NodeConnection
from client._shard_session import BatchLimits, ShardSession
from client._writer import Writer
from stateserver import placement
from stateserver.keygroups import KeyGroupRange
from stateserver.v1 import checkpoint_pb2 as cpb
from stateserver.v1 import state_pb2 as pb

KeyGroups = KeyGroupRange | str | Sequence[KeyGroupRange | str]


class StateClient:
    """Talks to the nodes in ``addresses``; a shard's node is chosen by rendezvous hashing."""

    def __init__(self, addresses: Sequence[str] | str, *, timeout: float = 30.0, max_message_bytes: int = 64 << 20,
                 batch_ops: int = 1000, batch_bytes: int = 4 << 20) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.addresses:
            raise ValueError("give at least one node address")
        self._timeout = timeout
        self._max_message_bytes = max_message_bytes
        self._batch_limits = BatchLimits(max_ops=batch_ops, max_bytes=batch_bytes)
        self._connections: dict[str, NodeConnection] = {}

    def connection(self, address: str) -> NodeConnection:
        connection = self._connections.get(address)
        if connection is None:
            connection = self._connections[address] = NodeConnection(
                address, max_message_bytes=self._max_message_bytes, timeout=self._timeout
            )
        return connection

    def node_for(self, shard_id: str) -> str:
        return placement.owner(shard_id, self.addresses)

    def create_namespace(self, namespace: str, max_key_groups: int) -> int:
        """Create the namespace on every node (idempotent); returns its number of key groups."""
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=max_key_groups)
        pending = [self.connection(address).start("CreateNamespace", request) for address in self.addresses]
        return max(call.result().max_key_groups for call in pending)

    def max_key_groups(self, namespace: str) -> int:
        request = pb.CreateNamespaceRequest(namespace=namespace, max_key_groups=0)
        return int(self.connection(self.addresses[0]).call("CreateNamespace", request).max_key_groups)

    def open_writer(self, namespace: str, *, key_groups: KeyGroups, epoch: int,
                    restore: int | str | None = None) -> Writer:
        """Open one shard per key-group range as the writer at ``epoch``, fencing older writers.

        ``restore`` (a checkpoint id or ``"latest"``) replaces the shards' state with exactly
        their key groups of that committed checkpoint, whatever the parallelism it was taken at.
        """
        max_key_groups = self.max_key_groups(namespace)
        sessions = []
        pending = []
        for key_group_range in _ranges(key_groups):
            shard_id = f"{namespace}/{key_group_range}"
            session = ShardSession(namespace=namespace, key_groups=key_group_range, epoch=epoch,
                                   connection=self.connection(self.node_for(shard_id)), limits=self._batch_limits)
            request = pb.OpenShardRequest(shard=session.ref, restore=_restore_source(restore))
            if restore is None:
                request.ClearField("restore")
            pending.append(session.connection.start("OpenShard", request, timeout=max(self._timeout, 600.0)))
            sessions.append(session)
        for call in pending:
            call.result()
        for session in sessions:
            session.reset_sequence()
        return Writer(namespace=namespace, max_key_groups=max_key_groups, epoch=epoch, sessions=sessions)

    def commit_checkpoint(self, namespace: str, checkpoint_id: int, handles: Sequence[cpb.ShardSnapshotHandle],
                          writers: Sequence[Writer] = ()) -> str:
        """Write the checkpoint's metadata (the commit point) once every shard snapshot is durable."""
        refs = [session.ref for writer in writers for session in writer.sessions]
        request = cpb.CommitCheckpointRequest(namespace=namespace, checkpoint_id=checkpoint_id, shards=handles,
                                              writers=refs)
        return str(self.connection(self.addresses[0]).call("CommitCheckpoint", request).metadata_key)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _restore_source(restore: int | str | None) -> pb.RestoreSource:
    if restore is None:
        return pb.RestoreSource()
    if restore == "latest":
        return pb.RestoreSource(latest=True)
    if isinstance(restore, int) and restore > 0:
        return pb.RestoreSource(checkpoint_id=restore)
    raise ValueError(f"restore takes a checkpoint id or 'latest', not {restore!r}")


def _ranges(key_groups: KeyGroups) -> list[KeyGroupRange]:
    items = [key_groups] if isinstance(key_groups, (KeyGroupRange, str)) else list(key_groups)
    return [item if isinstance(item, KeyGroupRange) else KeyGroupRange.parse(item) for item in items]

"""The gRPC CheckpointService: the checkpoint protocol of DESIGN.md on one node."""
from __future__ import annotations

import grpc

from stateserver.node.checkpointing import Checkpointing
from stateserver.ownership.epoch_allocation import allocate_epoch
from stateserver.protocol.errors import Fenced, InvalidInput
from stateserver.node.registry import ShardRegistry, check_epoch
from stateserver.node.state_service import shard_id_of, translate_errors
from stateserver.snapshot import SnapshotStatus
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import checkpoint_pb2_grpc

_STATES = {
    SnapshotStatus.UPLOADING: cpb.SNAPSHOT_STATE_UPLOADING,
    SnapshotStatus.DURABLE: cpb.SNAPSHOT_STATE_DURABLE,
    SnapshotStatus.FAILED: cpb.SNAPSHOT_STATE_FAILED,
}
MAX_AWAIT_SECONDS = 60.0


class CheckpointService(checkpoint_pb2_grpc.CheckpointServiceServicer):
    def __init__(self, registry: ShardRegistry, checkpointing: Checkpointing, *, node_id: str = "") -> None:
        self.registry = registry
        self.checkpointing = checkpointing
        self.node_id = node_id

    @translate_errors
    def SnapshotShard(self, request: cpb.SnapshotShardRequest, context: grpc.ServicerContext) -> cpb.SnapshotShardResponse:
        ref = request.shard
        if request.checkpoint_id == 0:
            raise InvalidInput("checkpoint ids start at 1")
        shard = self.registry.shard(ref.namespace, ref.key_group_start, ref.key_group_end, ref.epoch)
        with shard.lease():  # the sync phase flushes and links the shard's files
            seconds = self.checkpointing.snapshot(shard, request.checkpoint_id, ref.epoch)
        return cpb.SnapshotShardResponse(sync_millis=seconds * 1000)

    @translate_errors
    def AwaitShardSnapshot(self, request: cpb.AwaitShardSnapshotRequest,
                           context: grpc.ServicerContext) -> cpb.AwaitShardSnapshotResponse:
        timeout = min(request.timeout_millis / 1000, MAX_AWAIT_SECONDS)
        outcome = self.checkpointing.outcome(shard_id_of(request.shard), request.checkpoint_id, request.shard.epoch, timeout)
        reply = cpb.AwaitShardSnapshotResponse(state=_STATES[outcome.status], error=outcome.error)
        if outcome.result is not None:
            reply.handle.CopyFrom(outcome.result.handle)
        return reply

    @translate_errors
    def CommitCheckpoint(self, request: cpb.CommitCheckpointRequest,
                         context: grpc.ServicerContext) -> cpb.CommitCheckpointResponse:
        self._check_writers(request)
        key = self.checkpointing.commit(request.namespace, request.checkpoint_id, request.shards,
                                        operator_metadata=request.operator_metadata)
        return cpb.CommitCheckpointResponse(metadata_key=key)

    def _check_writers(self, request: cpb.CommitCheckpointRequest) -> None:
        """A stale writer cannot commit (invariant 5): each snapshot must come from the epoch
        the coordinator names, and no shard open here may have moved on to a newer one."""
        for epoch in [*(w.epoch for w in request.writers), *(h.writer_epoch for h in request.shards)]:
            check_epoch(epoch)
        epochs = {(w.key_group_start, w.key_group_end): w.epoch for w in request.writers}
        for handle in request.shards:
            named = epochs.get((handle.key_group_start, handle.key_group_end))
            if named is not None and named != handle.writer_epoch:
                raise Fenced(f"shard {handle.namespace}/{handle.key_group_start}-{handle.key_group_end} was "
                             f"snapshot by epoch {handle.writer_epoch}, not the committing writer's {named}")
            current = self.registry.open_epoch(handle.namespace, handle.key_group_start, handle.key_group_end)
            if current is not None and current > handle.writer_epoch:
                raise Fenced(f"shard {handle.namespace}/{handle.key_group_start}-{handle.key_group_end} is owned by "
                             f"epoch {current}; a snapshot by epoch {handle.writer_epoch} cannot commit")

    @translate_errors
    def NotifyCheckpointComplete(self, request: cpb.NotifyCheckpointRequest,
                                 context: grpc.ServicerContext) -> cpb.NotifyCheckpointResponse:
        self.registry.shard(request.shard.namespace, request.shard.key_group_start, request.shard.key_group_end,
                            request.shard.epoch)
        self.checkpointing.complete(shard_id_of(request.shard), request.checkpoint_id)
        return cpb.NotifyCheckpointResponse()

    @translate_errors
    def NotifyCheckpointAborted(self, request: cpb.NotifyCheckpointRequest,
                                context: grpc.ServicerContext) -> cpb.NotifyCheckpointResponse:
        self.checkpointing.abort(shard_id_of(request.shard), request.checkpoint_id)
        return cpb.NotifyCheckpointResponse()

    @translate_errors
    def AllocateEpoch(self, request: cpb.AllocateEpochRequest,
                      context: grpc.ServicerContext) -> cpb.AllocateEpochResponse:
        self.registry.max_key_groups(request.namespace)  # an unknown or malformed namespace is refused
        return cpb.AllocateEpochResponse(epoch=allocate_epoch(self.checkpointing.store, request.namespace,
                                                              node_id=self.node_id))

    @translate_errors
    def DescribeCheckpoint(self, request: cpb.DescribeCheckpointRequest,
                           context: grpc.ServicerContext) -> cpb.DescribeCheckpointResponse:
        self.registry.max_key_groups(request.namespace)
        which = request.WhichOneof("checkpoint")
        if which is None or (which == "checkpoint_id" and request.checkpoint_id == 0):
            raise InvalidInput("name a checkpoint id (from 1) or latest")
        metadata = self.checkpointing.catalog.resolve(
            request.namespace, "latest" if which == "latest" else request.checkpoint_id)
        return cpb.DescribeCheckpointResponse(checkpoint_id=metadata.checkpoint_id,
                                              operator_metadata=metadata.operator_metadata,
                                              committed_at_millis=metadata.committed_at_millis)

"""The gRPC StateService: decodes requests, calls the shard code, encodes replies.

This is the one place where the node's errors become gRPC status codes, each the status of the
error's reason in ``protocol.reasons``; the reason goes along in trailing metadata
(``stateserver-reason``) for clients.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from stateserver.protocol import errors, reasons

from stateserver.shard import reads as shard_reads

from stateserver.shard import writes as shard_writes

from stateserver.shard import stored_batches

from stateserver.protocol import stored_form, wire
from stateserver.node.metrics import NodeMetrics
from stateserver.protocol.operations import Batch
from stateserver.node.cluster import ClusterView
from stateserver.node.membership import Membership
from stateserver.protocol.keygroups import KEY_GROUP_PREFIX_BYTES, KeyGroupRange
from stateserver.ownership.claims import StoreClaims
from stateserver.node.checkpointing import Checkpointing, restore_source
from stateserver.node.registry import ShardRegistry, check_epoch
from stateserver.node.shard_open import EMPTY, RESUME, OpenSource
from stateserver.node.peer_fencing import PeerFencing
from stateserver.shard.shard import Shard, ShardId
from stateserver.protocol.names import check_name
from stateserver.protocol.states import StateDescriptor
from stateserver.shard.storage_errors import resource_cause
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def shard_id_of(ref: pb.ShardRef) -> ShardId:
    check_epoch(ref.epoch)
    try:
        return ShardId(ref.namespace, KeyGroupRange(ref.key_group_start, ref.key_group_end))
    except ValueError as exc:
        raise errors.InvalidInput(str(exc)) from None


def status_for(error: errors.StateServerError) -> grpc.StatusCode:
    return reasons.status_of(error.reason)


# The message travels in a header, and gRPC clients drop replies whose headers pass 8 KiB by
# default (RESOURCE_EXHAUSTED instead of the real status), so echoed input must not make it long.
MAX_MESSAGE_CHARS = 1000


def abort_with(context: grpc.ServicerContext, error: errors.StateServerError) -> None:
    context.set_trailing_metadata(((reasons.REASON_METADATA_KEY, error.reason),))
    message = str(error)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 15] + " ... (shortened)"
    context.abort(status_for(error), message)


def translate_errors(handler: Handler) -> Handler:
    """Turn the node's errors into gRPC statuses; nothing else leaves a handler."""

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except errors.StateServerError as exc:
            abort_with(context, exc)
        except ValueError as exc:  # malformed packed fields, bad descriptors
            abort_with(context, errors.InvalidInput(str(exc)))
        except Exception as exc:
            if "DbClosed" in type(exc).__name__:  # only when a close gave up waiting for this request
                abort_with(context, errors.ShardClosed("the shard was closed during the request; reopen it (OpenShard) "
                                                       "and retry"))
            cause = resource_cause(exc)  # outside a shard's lease, e.g. an open or restore on a full disk
            if cause is not None:
                log.error("request failed: out of a resource", extra={"method": handler.__name__, "cause": cause})
                abort_with(context, errors.ResourceExhausted(f"the node ran out of a resource: {cause}; free it and "
                                                             f"retry"))
            log.exception("request failed", extra={"method": handler.__name__})
            abort_with(context, errors.StateServerError(f"internal error: {type(exc).__name__}"))

    return wrapper  # type: ignore[return-value]


def decode_batch(request: pb.WriteBatchRequest | pb.ReadBatchRequest, key_lengths: list[int],
                 values: Sequence[bytes] = ()) -> Batch:
    """The packed fields both batch kinds share; raises ValueError when lengths do not add up.
    ``key_lengths``: ``request.key_lengths`` as a list (iterating a repeated field costs 2 to 4
    times as much as a list, and the stored form's checks iterate the lengths again)."""
    return Batch(
        ops=request.ops,
        states=request.states,
        state_indexes=request.state_indexes,
        keys=wire.unpack(request.keys, key_lengths),
        values=values,
        map_keys=wire.unpack(request.map_keys, request.map_key_lengths) if request.map_key_lengths else (),
    )


class StateService(state_pb2_grpc.StateServiceServicer):
    def __init__(self, registry: ShardRegistry, *, node_id: str, version: str,
                 checkpointing: Checkpointing | None = None, cluster: ClusterView | Membership | None = None,
                 metrics: NodeMetrics | None = None, max_message_bytes: int = 64 << 20,
                 peers: PeerFencing | None = None) -> None:
        self.registry = registry
        self.peers = peers  # the cluster's other members, told of every open
        self.max_message_bytes = max_message_bytes
        self.checkpointing = checkpointing
        self.cluster = cluster or ClusterView(node_id, ())
        self.node_id = node_id
        self.version = version
        self.metrics = metrics if metrics is not None else NodeMetrics()

    def _shard(self, ref: pb.ShardRef) -> Shard:
        return self.registry.shard(ref.namespace, ref.key_group_start, ref.key_group_end, ref.epoch)

    @contextlib.contextmanager
    def _leased(self, ref: pb.ShardRef, *, writing: bool = False) -> Iterator[Shard]:
        """The open shard, kept open (not closed under the request) until the block ends."""
        shard = self._shard(ref)
        with shard.lease(writing=writing):
            yield shard

    @translate_errors
    def CreateNamespace(self, request: pb.CreateNamespaceRequest, context: grpc.ServicerContext) -> pb.CreateNamespaceResponse:
        created = self.registry.create_namespace(request.namespace, request.max_key_groups)
        max_key_groups = self.registry.max_key_groups(request.namespace)
        return pb.CreateNamespaceResponse(created=created, max_key_groups=max_key_groups)

    @translate_errors
    def OpenShard(self, request: pb.OpenShardRequest, context: grpc.ServicerContext) -> pb.OpenShardResponse:
        ref = request.shard
        descriptors = [StateDescriptor.from_proto(s) for s in request.states]
        self.cluster.check_placement(f"{ref.namespace}/{ref.key_group_start}-{ref.key_group_end}",
                                     request.unavailable_nodes)
        # Everything is checked before anything changes: the registry claims ownership only
        # once the request is valid and a restore is downloaded (invariant 11).
        key_groups = self.registry.key_groups_of(ref.namespace, ref.key_group_start, ref.key_group_end)
        source = self._source(request.restore) if request.HasField("restore") else RESUME
        claims = (StoreClaims(self.checkpointing.ownership, ref.namespace, key_groups, ref.epoch, self.node_id,
                              request.owner_id) if self.checkpointing is not None else None)
        shard = self.registry.open_shard(ref.namespace, ref.key_group_start, ref.key_group_end, ref.epoch, descriptors,
                                         source, owner_id=request.owner_id, claims=claims)
        if self.peers is not None:  # a node's other workers before the writer hears it owns the key groups
            self.peers.fence_older(ref.namespace, key_groups, shard.epoch)
        states = [s.descriptor.to_proto() for s in shard.states.values()]
        return pb.OpenShardResponse(epoch=shard.epoch, states=states)

    def _source(self, source: pb.RestoreSource) -> OpenSource:
        kind = source.WhichOneof("source")
        if kind == "empty" and source.empty:
            return EMPTY
        if self.checkpointing is None:
            raise errors.InvalidInput("this node has no snapshot store to restore from")
        if kind == "latest" and source.latest:
            return restore_source(self.checkpointing, "latest")
        if kind == "checkpoint_id" and source.checkpoint_id > 0:
            return restore_source(self.checkpointing, source.checkpoint_id)
        raise errors.InvalidInput("a restore source names a checkpoint id (from 1), latest, or empty")

    @translate_errors
    def DeclareStates(self, request: pb.DeclareStatesRequest, context: grpc.ServicerContext) -> pb.DeclareStatesResponse:
        self._shard(request.shard).declare_states([StateDescriptor.from_proto(s) for s in request.states])
        return pb.DeclareStatesResponse()

    @translate_errors
    def CloseShard(self, request: pb.CloseShardRequest, context: grpc.ServicerContext) -> pb.CloseShardResponse:
        ref = request.shard
        self.registry.close_shard(ref.namespace, ref.key_group_start, ref.key_group_end, ref.epoch)
        return pb.CloseShardResponse()

    @translate_errors
    def WriteBatch(self, request: pb.WriteBatchRequest, context: grpc.ServicerContext) -> pb.WriteBatchResponse:
        epoch, sequence = request.shard.epoch, request.sequence
        with self._leased(request.shard, writing=True) as shard:
            # Registered before decoding, so that the batches after it wait for it instead of being
            # refused as out of order while it decodes.
            with shard.arrival(sequence) as arrival:
                key_lengths, value_lengths = list(request.key_lengths), list(request.value_lengths)
                try:
                    batch = decode_batch(request, key_lengths, values=wire.unpack(request.values, value_lengths)
                                         if value_lengths else ())
                except ValueError as exc:
                    # A malformed batch still uses its turn (and fails its session), or the writer's
                    # later batches would wait for it.
                    with shard.turn(sequence, epoch, arrival):
                        raise errors.InvalidInput(str(exc)) from None
                if request.stored_form:
                    applied = stored_batches.apply_stored_write_batch(
                        shard, batch, request.keys, key_lengths, request.values, value_lengths,
                        epoch=epoch, sequence=sequence, arrival=arrival)
                else:
                    applied = shard_writes.apply_write_batch(shard, batch, epoch=epoch, sequence=sequence,
                                                             arrival=arrival)
        written = len(request.keys) + len(request.values) + len(request.map_keys)
        if request.stored_form:  # the user's bytes: without each key's prefix and each value's header
            written -= (KEY_GROUP_PREFIX_BYTES + stored_form.HEADER_BYTES) * len(request.ops)
        self.metrics.record_write_batch(applied, written)
        return pb.WriteBatchResponse(applied=applied)

    @translate_errors
    def ReadBatch(self, request: pb.ReadBatchRequest, context: grpc.ServicerContext) -> pb.ReadBatchResponse:
        key_lengths = list(request.key_lengths)
        with self._leased(request.shard) as shard:
            if request.stored_form:
                results = stored_batches.read_stored_batch(shard, decode_batch(request, key_lengths), request.keys,
                                                           key_lengths)
            else:
                results = shard_reads.read_batch(shard, decode_batch(request, key_lengths))
        if None in results:
            found = bytes([r is not None for r in results])
            absent = stored_form.PLAIN_HEADER if request.stored_form else b""  # stored form: a header for each
            values, lengths = wire.pack([r if r is not None else absent for r in results])
        else:  # every key found, the common case: no per-key work
            found = b"\x01" * len(results)
            values, lengths = wire.pack(results)  # type: ignore[arg-type]
        # The user's bytes: in stored form without the header each value (or absence) carries.
        self.metrics.record_read(len(results), len(values) - (stored_form.HEADER_BYTES * len(results)
                                                              if request.stored_form else 0))
        return pb.ReadBatchResponse(found=found, values=values, value_lengths=lengths, stored_form=request.stored_form)

    @translate_errors
    def Iterate(self, request: pb.IterateRequest, context: grpc.ServicerContext) -> pb.IterateResponse:
        start_after = request.start_after if request.HasField("start_after") else None
        with self._leased(request.shard) as shard:
            page = shard_reads.iterate(shard, request.state, request.key, start_after, request.limit or 1000)
        entry_keys, entry_key_lengths = wire.pack(page.entry_keys)
        values, value_lengths = wire.pack(page.values)
        self.metrics.record_read(len(page.values), len(entry_keys) + len(values))
        return pb.IterateResponse(entry_keys=entry_keys, entry_key_lengths=entry_key_lengths,
                                  values=values, value_lengths=value_lengths, has_more=page.has_more)

    @translate_errors
    def FenceOlderWriters(self, request: pb.FenceOlderWritersRequest,
                          context: grpc.ServicerContext) -> pb.FenceOlderWritersResponse:
        fences = []
        for fence in request.opened:  # all checked before any is applied
            check_epoch(fence.epoch)
            try:  # the namespace need not be known here (then nothing is fenced), but well formed
                fences.append((check_name("namespace", fence.namespace),
                               KeyGroupRange(fence.key_group_start, fence.key_group_end), fence.epoch))
            except ValueError as exc:
                raise errors.InvalidInput(str(exc)) from None
        fenced = [shard_id for namespace, key_groups, epoch in fences
                  for shard_id in self.registry.fence_older(namespace, key_groups, epoch)]
        return pb.FenceOlderWritersResponse(fenced_shards=[str(shard_id) for shard_id in fenced])

    @translate_errors
    def NodeInfo(self, request: pb.NodeInfoRequest, context: grpc.ServicerContext) -> pb.NodeInfoResponse:
        shards = [str(shard.id) for shard in self.registry.open_shards()]
        limits = self.registry.limits
        node_limits = pb.NodeLimits(max_key_bytes=limits.max_key_bytes, max_value_bytes=limits.max_value_bytes,
                                    max_batch_ops=limits.max_batch_ops, max_message_bytes=self.max_message_bytes,
                                    stored_form=True)
        view = self.cluster.view() if isinstance(self.cluster, Membership) else self.cluster
        return pb.NodeInfoResponse(node_id=self.node_id, version=self.version, open_shards=shards,
                                   nodes=view.nodes, limits=node_limits, advertised_addresses=view.advertised)

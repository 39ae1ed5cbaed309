"""Telling the other members of the cluster that a writer opened key groups here at a newer epoch.

Placement routes a shard to a member (a node, or a worker of a node of several) by its key
groups, so a writer that splits or merges its range (a rescale) may open the new shards on
another member than the old ones. One process fences the older writer at once
(``ShardRegistry._take_over``); every successful open therefore tells the other members to fence
what they hold of those key groups at older epochs (``ShardRegistry.fence_older``: closed,
discarded, refused from then on), which also frees the memory the old shards held.

- The node's own other workers are told before the open returns, so a node of several workers
  fences as one process does. A sibling that does not answer (restarting: it holds no open shard
  then) is logged and passed over.
- Other nodes are told in the background, best effort: the open does not wait for a node that may
  be unreachable. Until one hears it, a stale writer there may still write into its old shard, but
  never commit it: the ownership records in the snapshot store fence that (invariant 5).
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable, Mapping

import grpc

from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc

log = logging.getLogger(__name__)

SIBLING_TIMEOUT_SECONDS = 5.0
PEER_TIMEOUT_SECONDS = 2.0
MAX_PEER_NOTICES_PENDING = 1024  # beyond this, notices to other nodes are dropped (logged)


class PeerFencing:
    """``siblings``: the node's other workers, cluster name -> where to dial it on this machine;
    ``members``: the cluster's current member names (this node's own and its siblings' included)."""

    def __init__(self, node_id: str, siblings: Mapping[str, str], members: Callable[[], Iterable[str]]) -> None:
        self.node_id = node_id
        self.siblings = dict(siblings)
        self.members = members
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._sibling_pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.siblings)),
                                                                   thread_name_prefix="fence-siblings")
        self._peer_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fence-peers")
        self._peer_pending = 0

    def fence_older(self, namespace: str, key_groups: KeyGroupRange, epoch: int) -> None:
        """Have every other member fence its shards overlapping ``key_groups`` at epochs before
        ``epoch``: the siblings before this returns, the other nodes in the background."""
        request = pb.FenceOlderWritersRequest(namespace=namespace, key_group_start=key_groups.start,
                                              key_group_end=key_groups.end, epoch=epoch)
        peers = [m for m in self._current_peers() if m not in self.siblings]
        for peer in peers:
            self._notify_peer_later(peer, request)
        calls = {name: self._sibling_pool.submit(self._notify, address, request, SIBLING_TIMEOUT_SECONDS)
                 for name, address in self.siblings.items()}
        for name, call in calls.items():
            call.result()

    def _current_peers(self) -> list[str]:
        members = {m for m in self.members() if m != self.node_id}
        with self._lock:  # channels of members that left the cluster are closed
            for gone in [address for address in self._channels
                         if address not in members and address not in self.siblings.values()]:
                self._channels.pop(gone).close()
        return sorted(members)

    def _notify_peer_later(self, peer: str, request: pb.FenceOlderWritersRequest) -> None:
        with self._lock:
            if self._peer_pending >= MAX_PEER_NOTICES_PENDING:
                log.warning("too many fence notices pending; one to another node is dropped",
                            extra={"peer": peer, "namespace": request.namespace, "epoch": request.epoch})
                return
            self._peer_pending += 1
        self._peer_pool.submit(self._notify_peer, peer, request)

    def _notify_peer(self, peer: str, request: pb.FenceOlderWritersRequest) -> None:
        try:
            self._notify(peer, request, PEER_TIMEOUT_SECONDS)
        finally:
            with self._lock:
                self._peer_pending -= 1

    def _notify(self, address: str, request: pb.FenceOlderWritersRequest, timeout: float) -> None:
        stub = state_pb2_grpc.StateServiceStub(self._channel(address))
        try:
            reply = stub.FenceOlderWriters(request, timeout=timeout)
        except grpc.RpcError as exc:
            log.warning("a member did not fence older writers", extra={
                "member": address, "namespace": request.namespace, "epoch": request.epoch,
                "key_groups": f"{request.key_group_start}-{request.key_group_end}",
                "error": f"{exc.code()}: {exc.details()}"})
            return
        if reply.fenced_shards:
            log.info("a member fenced older writers", extra={"member": address, "namespace": request.namespace,
                                                            "shards": list(reply.fenced_shards),
                                                            "epoch": request.epoch})

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = grpc.insecure_channel(address)
            return channel

    def close(self) -> None:
        self._sibling_pool.shutdown(wait=False, cancel_futures=True)
        self._peer_pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

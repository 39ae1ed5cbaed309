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
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import grpc

from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc

log = logging.getLogger(__name__)

SIBLING_TIMEOUT_SECONDS = 5.0
PEER_TIMEOUT_SECONDS = 2.0
# Notices to other nodes wait this long for more to go with them: a failover's or a rescale's
# opens come in bursts, and one call per node per burst costs far less CPU than one per open.
PEER_LINGER_SECONDS = 0.05
MAX_PEER_NOTICES_PENDING = 4096  # beyond this, notices to other nodes are dropped (logged)


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
        self._pending: queue.Queue[pb.ShardRef | None] = queue.Queue(maxsize=MAX_PEER_NOTICES_PENDING)
        self._sender: threading.Thread | None = None

    def fence_older(self, namespace: str, key_groups: KeyGroupRange, epoch: int) -> None:
        """Have every other member fence its shards overlapping ``key_groups`` at epochs before
        ``epoch``: the siblings before this returns, the other nodes in the background."""
        fence = pb.ShardRef(namespace=namespace, key_group_start=key_groups.start, key_group_end=key_groups.end,
                            epoch=epoch)
        self._notify_peers_later(fence)
        request = pb.FenceOlderWritersRequest(opened=[fence])
        calls = [self._sibling_pool.submit(self._notify, address, request, SIBLING_TIMEOUT_SECONDS)
                 for address in self.siblings.values()]
        for call in calls:
            call.result()

    def _notify_peers_later(self, fence: pb.ShardRef) -> None:
        with self._lock:
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_to_peers, name="fence-peers", daemon=True)
                self._sender.start()
        try:
            self._pending.put_nowait(fence)
        except queue.Full:
            log.warning("too many fence notices pending; one to other nodes is dropped",
                        extra={"namespace": fence.namespace, "epoch": fence.epoch})

    def _send_to_peers(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            time.sleep(PEER_LINGER_SECONDS)
            fences = [first]
            while True:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    return
                fences.append(more)
            request = pb.FenceOlderWritersRequest(opened=fences)
            calls = [self._peer_pool.submit(self._notify, peer, request, PEER_TIMEOUT_SECONDS)
                     for peer in self._current_peers()]
            concurrent.futures.wait(calls)

    def _current_peers(self) -> list[str]:
        """The members that are not this node's workers; channels of members gone are closed."""
        members = {m for m in self.members() if m != self.node_id and m not in self.siblings}
        with self._lock:
            for gone in [address for address in self._channels
                         if address not in members and address not in self.siblings.values()]:
                self._channels.pop(gone).close()
        return sorted(members)

    def _notify(self, address: str, request: pb.FenceOlderWritersRequest, timeout: float) -> None:
        stub = state_pb2_grpc.StateServiceStub(self._channel(address))
        try:
            reply = stub.FenceOlderWriters(request, timeout=timeout)
        except grpc.RpcError as exc:
            log.warning("a member did not fence older writers", extra={
                "member": address, "fences": len(request.opened), "error": f"{exc.code()}: {exc.details()}"})
            return
        if reply.fenced_shards:
            log.info("a member fenced older writers", extra={"member": address, "shards": list(reply.fenced_shards)})

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = grpc.insecure_channel(address)
            return channel

    def close(self) -> None:
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            while True:  # what is still pending is dropped: the store's records fence it anyway
                try:
                    self._pending.get_nowait()
                except queue.Empty:
                    break
            with contextlib.suppress(queue.Full):
                self._pending.put_nowait(None)
        self._sibling_pool.shutdown(wait=False, cancel_futures=True)
        self._peer_pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

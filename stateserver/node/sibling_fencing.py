"""Telling a node's other workers that a writer opened key groups here at a newer epoch.

Placement routes a shard to one worker by its key groups, so a writer that splits or merges its
range (a rescale) may open the new shards on another worker than the old one. One process fences
the older writer at once (``ShardRegistry._take_over``); a node of several workers must behave
the same, so every successful open tells the sibling workers, before it returns, to fence what
they hold of those key groups at older epochs (``ShardRegistry.fence_older``). A sibling that does
not answer (restarting: it holds no open shard then) is logged and passed over; the ownership
records in the snapshot store still keep a stale writer from committing (invariant 5).
"""
from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Sequence

import grpc

from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc

log = logging.getLogger(__name__)

FENCE_TIMEOUT_SECONDS = 5.0


class SiblingFencing:
    def __init__(self, siblings: Sequence[str], timeout: float = FENCE_TIMEOUT_SECONDS) -> None:
        self.siblings = tuple(siblings)
        self.timeout = timeout
        self._channels = {address: grpc.insecure_channel(address) for address in self.siblings}
        self._stubs = {address: state_pb2_grpc.StateServiceStub(channel) for address, channel in self._channels.items()}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.siblings)),
                                                           thread_name_prefix="fence-siblings")

    def fence_older(self, namespace: str, key_groups: KeyGroupRange, epoch: int) -> None:
        """Have every sibling fence its shards overlapping ``key_groups`` at epochs before ``epoch``."""
        request = pb.FenceOlderWritersRequest(namespace=namespace, key_group_start=key_groups.start,
                                              key_group_end=key_groups.end, epoch=epoch)
        calls = {address: self._pool.submit(self._stubs[address].FenceOlderWriters, request, timeout=self.timeout)
                 for address in self.siblings}
        for address, call in calls.items():
            try:
                reply = call.result()
            except grpc.RpcError as exc:
                log.warning("a sibling worker did not fence older writers",
                            extra={"sibling": address, "namespace": namespace, "key_groups": str(key_groups),
                                   "epoch": epoch, "error": f"{exc.code()}: {exc.details()}"})
                continue
            if reply.fenced_shards:
                log.info("a sibling worker fenced older writers",
                         extra={"sibling": address, "namespace": namespace, "shards": list(reply.fenced_shards),
                                "epoch": epoch})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for channel in self._channels.values():
            channel.close()

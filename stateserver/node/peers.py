"""Asking a peer node where it can be reached from outside the cluster (its advertised address)."""
from __future__ import annotations

import grpc

from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc

PEER_TIMEOUT_SECONDS = 1.0


def ask_advertised_address(peer: str, timeout: float = PEER_TIMEOUT_SECONDS) -> str | None:
    """The address ``peer`` (a cluster name, dialled as it is) advertises; None if it does not answer."""
    channel = grpc.insecure_channel(peer)
    try:
        reply = state_pb2_grpc.StateServiceStub(channel).NodeInfo(pb.NodeInfoRequest(), timeout=timeout)
    except grpc.RpcError:
        return None
    finally:
        channel.close()
    return reply.advertised_addresses.get(reply.node_id) or None

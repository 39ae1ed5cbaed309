"""ClientSettings: every connection setting of StateClient and AsyncStateClient in one value."""
from __future__ import annotations

import dataclasses
from typing import Any

from stateserver.client._errors import InvalidArgumentError


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """How a client talks to the nodes; the defaults suit a cluster on one network.

    Timeouts and backoffs are in seconds. ``probe_backoff_*`` say how soon a node found unreachable
    is asked again (doubling from min to max while it stays down), so a restarted node is used again
    within about ``reconnect_backoff_max + probe_backoff_max`` of serving. ``node_list_max_age``:
    routing asks a node for the cluster's node list again once it is older than this (0: never).
    """

    connect_timeout: float = 5.0  # NodeInfo: refreshing the node list, probing a node
    request_timeout: float = 30.0  # every other call, unless it says otherwise
    open_timeout: float = 600.0  # OpenShard, which may download a restore first
    retry_attempts: int = 4  # opening a shard, and calls any node can answer
    # OpenShard calls in flight to one node: each may download a restore and holds one of the
    # node's RPC threads, so a recovery of many shards leaves it room to serve.
    opens_per_node: int = 8
    retry_backoff_min: float = 0.05
    retry_backoff_max: float = 1.0
    probe_backoff_min: float = 0.1
    probe_backoff_max: float = 1.0
    node_list_max_age: float = 10.0
    keepalive_time: float = 30.0  # gRPC keepalive pings while calls are in flight
    keepalive_timeout: float = 10.0
    reconnect_backoff_min: float = 0.1  # gRPC's own reconnect backoff of a channel
    reconnect_backoff_max: float = 0.5
    max_message_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        problems = [f"{f.name} must be a positive number, got {getattr(self, f.name)!r}"
                    for f in dataclasses.fields(self)
                    if f.name != "node_list_max_age" and not _positive(getattr(self, f.name))]
        if not _positive(self.node_list_max_age) and self.node_list_max_age != 0:
            problems.append(f"node_list_max_age must be 0 or more, got {self.node_list_max_age!r}")
        for low, high in (("retry_backoff_min", "retry_backoff_max"), ("probe_backoff_min", "probe_backoff_max"),
                          ("reconnect_backoff_min", "reconnect_backoff_max")):
            if not problems and getattr(self, low) > getattr(self, high):
                problems.append(f"{low} must not exceed {high}")
        if not all(isinstance(v, int) for v in (self.retry_attempts, self.max_message_bytes, self.opens_per_node)):
            problems.append("retry_attempts, max_message_bytes and opens_per_node must be integers")
        if problems:
            raise InvalidArgumentError("invalid client settings: " + "; ".join(problems))

    def channel_options(self) -> list[tuple[str, Any]]:
        """The gRPC channel arguments these settings stand for."""
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", _ms(self.keepalive_time)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout)),
            ("grpc.initial_reconnect_backoff_ms", _ms(self.reconnect_backoff_min)),
            ("grpc.min_reconnect_backoff_ms", _ms(self.reconnect_backoff_min)),
            ("grpc.max_reconnect_backoff_ms", _ms(self.reconnect_backoff_max)),
        ]

    def backoff(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (from 0)."""
        return float(min(self.retry_backoff_max, self.retry_backoff_min * 2 ** attempt))


def resolve_settings(settings: ClientSettings | None, *, timeout: float | None,
                     max_message_bytes: int | None) -> ClientSettings:
    """``settings`` with the older keyword arguments (``timeout``, ``max_message_bytes``) applied."""
    settings = settings or ClientSettings()
    overrides: dict[str, Any] = {}
    if timeout is not None:
        overrides["request_timeout"] = timeout
        overrides["connect_timeout"] = min(settings.connect_timeout, timeout)
    if max_message_bytes is not None:
        overrides["max_message_bytes"] = max_message_bytes
    return dataclasses.replace(settings, **overrides) if overrides else settings


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))

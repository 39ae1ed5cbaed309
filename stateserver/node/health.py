"""Asking a node's standard gRPC health service (``grpc.health.v1``) whether it serves.

``stateserver health`` is this, for the container HEALTHCHECK and Kubernetes' probes. A node
answers SERVING once it started, NOT_SERVING from the moment it begins to drain.
"""
from __future__ import annotations

import dataclasses

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["HealthReport", "check_health"]

_MAX_DETAIL = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthReport:
    serving: bool
    message: str  # one line, for a person reading a probe's output


def check_health(address: str, *, timeout: float, service: str = "") -> HealthReport:
    """Ask the node at ``address`` about ``service`` ('' is the node as a whole); never raises for
    an unreachable or failing node: that is a report with ``serving=False``."""
    what = f"{address}" + (f" service {service!r}" if service else "")
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            if code is grpc.StatusCode.NOT_FOUND:
                return HealthReport(serving=False, message=f"{what}: the node does not know this service")
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return HealthReport(serving=False, message=f"{what}: no answer within {timeout:g}s")
            detail = " ".join(str(exc.details() or "").split())[:_MAX_DETAIL]
            return HealthReport(serving=False, message=f"{what}: unreachable ({code.name}: {detail})")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return HealthReport(serving=serving, message=f"{what}: {status}")

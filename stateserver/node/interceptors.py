"""gRPC server interceptors of a node: request metrics, and the count of requests in flight.

Both wrap the handler of every RPC, whatever the service, so a service added later is
covered without changes. A wrapper sees each call begin and end; the status code is what
the handler set on its context (``abort`` sets it before raising), OK when it returned.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from stateserver.node.metrics import NodeMetrics

__all__ = ["InFlightRequests", "RequestMetricsInterceptor", "status_of"]

# Called when a call ends, with its context and the exception that ended it (None: returned).
End = Callable[[grpc.ServicerContext, BaseException | None], None]
# Called when a call begins, with the RPC name; returns what to call at its end.
Begin = Callable[[str], End]
Continuation = Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None]


def status_of(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with, as its client sees it."""
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code
    if error is None:
        return grpc.StatusCode.OK
    # A response stream closed early: the client went away.
    return grpc.StatusCode.CANCELLED if isinstance(error, GeneratorExit) else grpc.StatusCode.UNKNOWN


def wrap_handler(handler: grpc.RpcMethodHandler, method: str, begin: Begin) -> grpc.RpcMethodHandler:
    """``handler`` with ``begin`` called as each call starts and its result as it ends."""
    h: Any = handler  # grpc's handlers are namedtuples; the stubs do not say so
    if h.unary_unary is not None:
        return h._replace(unary_unary=_wrap_unary(h.unary_unary, method, begin))
    if h.stream_unary is not None:
        return h._replace(stream_unary=_wrap_unary(h.stream_unary, method, begin))
    if h.unary_stream is not None:
        return h._replace(unary_stream=_wrap_stream(h.unary_stream, method, begin))
    if h.stream_stream is not None:
        return h._replace(stream_stream=_wrap_stream(h.stream_stream, method, begin))
    return handler


def _wrap_unary(behavior: Callable[[Any, grpc.ServicerContext], Any], method: str,
                begin: Begin) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        end = begin(method)
        try:
            response = behavior(request, context)
        except BaseException as exc:
            end(context, exc)
            raise
        end(context, None)
        return response
    return wrapped


def _wrap_stream(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str,
                 begin: Begin) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        end = begin(method)
        try:
            yield from behavior(request, context)
        except BaseException as exc:
            end(context, exc)
            raise
        end(context, None)
    return wrapped


class _WrappingInterceptor(grpc.ServerInterceptor):
    """Wraps the handlers of the methods ``wraps`` accepts with ``_begin``; a method's wrapped
    handler is made once and reused while the server hands out the same handler (2 us a call saved)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation: Continuation,
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        path = str(handler_call_details.method)
        if handler is None or not self.wraps(path):
            return handler
        cached = self._wrapped.get(path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap_handler(handler, path.rpartition("/")[2], self._begin)
        self._wrapped[path] = (handler, wrapped)
        return wrapped

    def wraps(self, path: str) -> bool:
        return True

    def _begin(self, method: str) -> End:
        raise NotImplementedError


class RequestMetricsInterceptor(_WrappingInterceptor):
    """Counts and times every RPC by method and status code."""

    def __init__(self, metrics: NodeMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def _begin(self, method: str) -> End:
        started = time.perf_counter()

        def end(context: grpc.ServicerContext, error: BaseException | None) -> None:
            self._metrics.record_request(method, status_of(context, error), time.perf_counter() - started)
        return end


class InFlightRequests(_WrappingInterceptor):
    """Counts handlers running, so that a drain can wait for them to return.

    ``grpc.Server.stop(grace)`` cancels the calls still running when the grace period ends, but
    cannot stop the threads running their handlers: those go on, and may be writing to a shard.
    The health service is left out: a health Watch lasts as long as its client wants.
    """

    def __init__(self, *, skip_prefix: str = "/grpc.health.v1.Health/") -> None:
        super().__init__()
        self._skip_prefix = skip_prefix
        self._running = 0
        self._changed = threading.Condition()

    @property
    def running(self) -> int:
        return self._running

    def wraps(self, path: str) -> bool:
        return not path.startswith(self._skip_prefix)

    def _begin(self, method: str) -> End:
        with self._changed:
            self._running += 1
        return self._end

    def _end(self, context: grpc.ServicerContext, error: BaseException | None) -> None:
        with self._changed:
            self._running -= 1
            if not self._running:
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every handler to return; how many still run."""
        with self._changed:
            self._changed.wait_for(lambda: not self._running, timeout)
            return self._running

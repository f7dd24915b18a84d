"""The gRPC call metrics: one interceptor, outside the edge interceptor, counts every call
by service, method and status code, times the unary ones, keeps the calls in flight and
counts the refusals for overload (wallet_service/metrics.py).

Outside the edge, it sees each call's final status as the caller does, refusals
included. Only registered methods are wrapped, so the method label is bounded.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from wallet_service.api.errors import STATUS_DETAILS_KEY
from wallet_service.domain.errors import Reason
from wallet_service.metrics import OVERLOAD_LIMITS, Metrics, split_method

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Unary: TypeAlias = Callable[[Any, ServicerContext], Awaitable[Any]]
Streaming: TypeAlias = Callable[[Any, ServicerContext], AsyncIterator[Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

STATUS_CODES = tuple(code.name for code in grpc.StatusCode)


class CallMetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, methods: Iterable[str]) -> None:
        """``methods``: the full names of the registered methods, whose series exist from
        the start."""
        self._metrics = metrics
        metrics.known_methods(methods, STATUS_CODES)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED, uncounted
            return handler
        service, method = split_method(handler_call_details.method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(service, method, cast(Unary, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(service, method, cast(Streaming | Unary, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # reflection's bidirectional stream: not ours to count

    def _unary(self, service: str, method: str, behaviour: Unary) -> Unary:
        in_flight = self._metrics.grpc_in_flight.labels(service, method)
        seconds = self._metrics.grpc_call_seconds.labels(service, method)

        async def wrapped(request: Any, context: ServicerContext) -> Any:
            started = time.perf_counter()
            in_flight.inc()
            raised: BaseException | None = None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                raised = exc
                raise
            finally:
                in_flight.dec()
                seconds.observe(time.perf_counter() - started)
                self._count(service, method, context, raised)

        return wrapped

    def _streaming(
        self, service: str, method: str, behaviour: Streaming | Unary
    ) -> Streaming | Unary:
        if not inspect.isasyncgenfunction(behaviour):
            return self._writing(service, method, cast(Unary, behaviour))
        generate = cast(Streaming, behaviour)

        async def wrapped(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            stream = self._opened(service, method, context)
            try:
                async for response in generate(request, context):
                    yield response
            except BaseException as exc:
                stream.raised = exc
                raise
            stream.finished = True

        return wrapped

    def _writing(self, service: str, method: str, behaviour: Unary) -> Unary:
        """A stream whose behaviour writes with context.write (grpc's health Watch)."""

        async def wrapped(request: Any, context: ServicerContext) -> Any:
            stream = self._opened(service, method, context)
            try:
                result = await behaviour(request, context)
            except BaseException as exc:
                stream.raised = exc
                raise
            stream.finished = True
            return result

        return wrapped

    def _opened(self, service: str, method: str, context: ServicerContext) -> _Stream:
        self._metrics.grpc_in_flight.labels(service, method).inc()
        stream = _Stream()
        # Counted by grpc's done callback, which runs however the stream ends; a
        # generator's finally waits for collection when the call is cut off mid-send.
        # (cast: the stubs type the callback as a private class, not a callable.)
        context.add_done_callback(
            cast(Any, lambda _: self._stream_ended(service, method, context, stream))
        )
        return stream

    def _stream_ended(
        self, service: str, method: str, context: ServicerContext, stream: _Stream
    ) -> None:
        self._metrics.grpc_in_flight.labels(service, method).dec()
        # A stream that neither finished nor raised was cut off while a message was on
        # its way: its caller hung up or its deadline passed.
        cut_off = not stream.finished and stream.raised is None
        raised = asyncio.CancelledError() if cut_off else stream.raised
        self._count(service, method, context, raised)

    def _count(
        self, service: str, method: str, context: ServicerContext, raised: BaseException | None
    ) -> None:
        code = _code(context, raised)
        self._metrics.grpc_calls.labels(service, method, code.name).inc()
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            limit = _overload_limit(context)
            if limit is not None:
                self._metrics.grpc_refused.labels(limit).inc()


class _Stream:
    """How a server stream's generator ended, as far as it got."""

    def __init__(self) -> None:
        self.finished = False
        self.raised: BaseException | None = None


def _code(context: ServicerContext, raised: BaseException | None) -> grpc.StatusCode:
    """The status the call ends with: an error set on it (the edge sets every error's),
    else CANCELLED when it was cut off (the caller hung up, its deadline passed), else
    what grpc makes of how the behaviour ended."""
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        return code
    if isinstance(raised, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    if raised is not None:
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


def _overload_limit(context: ServicerContext) -> str | None:
    """The limit an OVERLOADED refusal names in its ErrorInfo; None for other refusals
    with RESOURCE_EXHAUSTED (OTP_RATE_LIMITED, OTP_LOCKED). Read only for those."""
    for key, value in context.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.reason == Reason.OVERLOADED.value:
                limit = info.metadata.get("limit", "")
                return limit if limit in OVERLOAD_LIMITS else None
    return None

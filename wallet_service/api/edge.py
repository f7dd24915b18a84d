"""The edge interceptor: overload, authentication, permissions, the money deadline guard,
the bounds on watch streams, error mapping, and the call log with each call's trace id.

Servicer methods contain only the happy path; everything they raise is turned into
a status here, in one place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import Message

from wallet_service.api.auth import (
    PUBLIC_PREFIXES,
    Authenticator,
    Unauthenticated,
    current_caller,
)
from wallet_service.api.errors import STATUS_DETAILS_KEY, internal_status, to_status
from wallet_service.api.fields import edge_violations, nul_characters
from wallet_service.domain.errors import DatabaseBusy, Reason, WalletError
from wallet_service.logs import Trace, current_trace, new_trace_id, trace_id_of

log = logging.getLogger("wallet_service.calls")

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Unary: TypeAlias = Callable[[Any, ServicerContext], Awaitable[Any]]
Streaming: TypeAlias = Callable[[Any, ServicerContext], AsyncIterator[Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Metadata: TypeAlias = tuple[tuple[str, str | bytes], ...]

# The caller's W3C trace context (docs/api.md, "Tracing"), and the trailing metadata key
# that tells every caller the trace id its call was logged under.
TRACEPARENT_KEY = "traceparent"
TRACE_ID_KEY = "x-trace-id"
# Refusals of a caller's credentials or rights: the lines an auditor looks for.
_REFUSALS = frozenset({Reason.UNAUTHENTICATED, Reason.PERMISSION_DENIED})

# The RPCs that may start a KasPro money call: they get the deadline guard.
MONEY_METHODS = frozenset(
    {
        "/wallet.v1.FundingService/CashOut",
        "/wallet.v1.PaymentService/AuthorizeRidePayment",
        "/wallet.v1.PaymentService/CaptureRidePayment",
        "/wallet.v1.PaymentService/VoidRidePayment",
        "/wallet.v1.PaymentService/TipDriver",
        "/wallet.v1.PaymentService/Transfer",
        "/wallet.v1.PaymentService/PayQris",
    }
)
SHORT_DEADLINE_MESSAGE = (
    "too little time left on the deadline to call KasPro safely; retry with a longer deadline"
)


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        max_concurrent_calls: int,
        *,
        min_money_deadline_seconds: float,
        max_watch_streams: int,
        max_watch_streams_per_caller: int,
    ) -> None:
        self._auth = authenticator
        self._max_calls = max_concurrent_calls
        self._min_money_deadline = min_money_deadline_seconds
        self._calls = 0
        self._watch_streams = WatchStreams(max_watch_streams, max_watch_streams_per_caller)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, cast(Unary, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, cast(Streaming, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, method: str, behaviour: Unary) -> Unary:
        async def wrapped(request: Any, context: ServicerContext) -> Any:
            metadata: Metadata = tuple(context.invocation_metadata() or ())
            call = _Call(method, _start_trace(metadata, context))
            self._calls += 1
            try:
                if self._calls > self._max_calls:
                    # Refused at once rather than queued behind calls waiting on KasPro.
                    raise WalletError(
                        Reason.OVERLOADED,
                        "the wallet service is at its concurrency limit: retry shortly",
                        retry_after_seconds=0.1,
                        metadata={"limit": "concurrent_rpcs"},
                    )
                caller = self._admit(method, context, metadata, call)
                current_caller.set(caller)
                if method in MONEY_METHODS:
                    self._guard_deadline(context)
                # Named in the RPC's own validation, with every other bad field.
                if isinstance(request, Message):
                    edge_violations.set(tuple(nul_characters(request)))
                return await behaviour(request, context)
            except Exception as exc:
                call.fail(exc, context)
                return None
            except BaseException:  # cancellation and interpreter exits keep their course
                call.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._calls -= 1
                call.log(context)

        return wrapped

    def _streaming(self, method: str, behaviour: Streaming) -> Streaming:
        async def wrapped(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            metadata: Metadata = tuple(context.invocation_metadata() or ())
            call = _Call(method, _start_trace(metadata, context))
            try:
                caller = self._admit(method, context, metadata, call)
                current_caller.set(caller)
                self._watch_streams.open(caller.name)
                # Given back by grpc's done callback, which runs however the call ends
                # (hang-up, deadline, server stop); a generator's finally would wait for
                # the generator to be collected when the call is cancelled mid-send.
                # (cast: the stubs type the callback as a private class, not a callable.)
                context.add_done_callback(
                    cast(Any, lambda _: self._watch_streams.close(caller.name))
                )
                async for response in behaviour(request, context):
                    yield response
            except Exception as exc:
                call.fail(exc, context)
            except BaseException:  # cancellation and interpreter exits keep their course
                call.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                call.log(context)

        return wrapped

    def _admit(self, method: str, context: ServicerContext, metadata: Metadata, call: _Call) -> Any:
        common_names = _common_names(context) if self._auth.uses_certificates else ()
        caller = self._auth.authenticate(metadata, common_names)
        call.caller = caller.name  # named in the call log even if refused the method
        self._auth.authorize(caller, method)
        return caller

    def _guard_deadline(self, context: ServicerContext) -> None:
        """Refuse a money call that could not wait out a KasPro call before its deadline.

        Started anyway, it would likely leave a PROCESSING transaction and answer
        PROVIDER_UNAVAILABLE after a KasPro call; refused here, nothing is started, so
        a retry with the same request_id (and a longer deadline) runs afresh.
        """
        if self._min_money_deadline <= 0:
            return
        remaining: float | None = context.time_remaining()
        if remaining is not None and remaining < self._min_money_deadline:
            raise WalletError(
                Reason.PROVIDER_UNAVAILABLE,
                SHORT_DEADLINE_MESSAGE,
                metadata={"min_deadline_seconds": f"{self._min_money_deadline:g}"},
            )


class WatchStreams:
    """The server-streaming calls (WatchEvents) open at once, in all and per caller name.

    Each open stream costs a database read per event batch and per idle second, so
    unbounded they starve the unary calls (docs/operations.md, "Bounds of the gRPC port").
    """

    def __init__(self, limit: int, per_caller: int) -> None:
        self._limit = limit
        self._per_caller = per_caller
        self._total = 0
        self._by_caller: Counter[str] = Counter()

    def open(self, caller: str) -> None:
        """Count a new stream of ``caller``, or refuse it with OVERLOADED."""
        if self._by_caller[caller] >= self._per_caller:
            raise WalletError(
                Reason.OVERLOADED,
                f"this caller has {self._per_caller} WatchEvents streams open, its limit: "
                "close one before opening another",
                retry_after_seconds=1.0,
                metadata={"limit": "watch_streams_per_caller"},
            )
        if self._total >= self._limit:
            raise WalletError(
                Reason.OVERLOADED,
                "the wallet service has its limit of WatchEvents streams open: retry shortly",
                retry_after_seconds=1.0,
                metadata={"limit": "watch_streams"},
            )
        self._total += 1
        self._by_caller[caller] += 1

    def close(self, caller: str) -> None:
        self._total -= 1
        self._by_caller[caller] -= 1
        if not self._by_caller[caller]:
            del self._by_caller[caller]


def _common_names(context: ServicerContext) -> Sequence[str]:
    """The subject CNs of the client certificate the TLS handshake verified (none: no TLS)."""
    auth = context.auth_context()
    if list(auth.get("transport_security_type", ())) != [b"ssl"]:
        return ()
    return tuple(name.decode("utf-8", "replace") for name in auth.get("x509_common_name", ()))


def _start_trace(metadata: Metadata, context: ServicerContext) -> Trace:
    """The call's trace: the caller's W3C trace id when it sent a valid ``traceparent``,
    else a new one; current for everything the call logs, and told in its trailers.

    Set without a reset: grpc.aio runs each call in a task of its own, whose context ends
    with it (as current_caller's does)."""
    sent = [value for key, value in metadata if key == TRACEPARENT_KEY]
    trace_id = trace_id_of(sent[0]) if len(sent) == 1 and isinstance(sent[0], str) else None
    trace = Trace(trace_id or new_trace_id())
    current_trace.set(trace)
    context.set_trailing_metadata(((TRACE_ID_KEY, trace.trace_id),))
    if sent and trace_id is None:
        shown = [str(value)[:64] for value in sent[:3]]
        log.debug("invalid traceparent %r: a new trace id is made up", shown)
    return trace


class _Call:
    """Book-keeping for one call's log line."""

    def __init__(self, method: str, trace: Trace) -> None:
        self.method = method
        self.trace = trace
        self.caller = "-"
        self.started = time.perf_counter()
        self.code: grpc.StatusCode | None = None
        self.reason: Reason | None = None
        self.incident: str | None = None

    def fail(self, exc: Exception, context: ServicerContext) -> None:
        """Set the status ``exc`` stands for on the call; grpc sends it once we return.

        Not context.abort(): grpc keeps abort's exception on the call, and its traceback
        holds the call and the request (an UpgradeKyc's 15 MiB), a reference cycle that
        waits for the garbage collector (docs/decisions/0003-grpc-receive-limit.md).
        """
        if isinstance(exc, DatabaseBusy):
            exc = WalletError(Reason.DATABASE_BUSY, str(exc), retry_after_seconds=1.0)
        if isinstance(exc, Unauthenticated):
            self.caller = exc.presented  # what was presented, never the token itself
        if isinstance(exc, WalletError):
            self.reason = exc.reason
            code, message, details = to_status(exc)
        elif isinstance(exc, NotImplementedError):
            code, message, details = grpc.StatusCode.UNIMPLEMENTED, "not implemented yet", b""
        else:
            self.incident = uuid.uuid4().hex[:12]
            log.error(
                "unexpected error in %s",
                self.method,
                exc_info=exc,
                extra={"incident": self.incident, "method": self.method},
            )
            code, message, details = internal_status(self.incident)
        self.code = code
        context.set_code(code)
        context.set_details(message)
        if details:
            context.set_trailing_metadata(
                ((STATUS_DETAILS_KEY, details), (TRACE_ID_KEY, self.trace.trace_id))
            )

    def log(self, context: ServicerContext) -> None:
        # A refused caller is a warning: kept at WALLET_LOG_LEVEL=WARNING too, for audit.
        level = logging.WARNING if self.reason in _REFUSALS else logging.INFO
        if not log.isEnabledFor(level):
            return  # the line is not wanted: skip building it (the hot path of every call)
        code = self.code or grpc.StatusCode.OK
        log.log(
            level,
            "%s %s %s",
            self.method,
            self.caller,
            code.name,
            extra={
                "method": self.method,
                "caller": self.caller,
                "code": code.name,
                "reason": None if self.reason is None else self.reason.value,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
                "incident": self.incident,
                "kaspro_request_ids": list(self.trace.kaspro_request_ids) or None,
            },
        )

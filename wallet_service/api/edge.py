"""The edge interceptor: authentication, permissions, error mapping and the call log.

Servicer methods contain only the happy path; everything they raise is turned into
a status here, in one place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

from wallet_service.api.auth import PUBLIC_PREFIXES, Authenticator, current_caller
from wallet_service.api.errors import STATUS_DETAILS_KEY, internal_status, to_status
from wallet_service.domain.errors import Reason, WalletError

log = logging.getLogger("wallet_service.calls")

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Unary: TypeAlias = Callable[[Any, ServicerContext], Awaitable[Any]]
Streaming: TypeAlias = Callable[[Any, ServicerContext], AsyncIterator[Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, max_concurrent_calls: int) -> None:
        self._auth = authenticator
        self._max_calls = max_concurrent_calls
        self._calls = 0

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
            call = _Call(method)
            self._calls += 1
            try:
                if self._calls > self._max_calls:
                    # Refused at once rather than queued behind calls waiting on KasPro.
                    raise WalletError(
                        Reason.OVERLOADED,
                        "the wallet service is at its concurrency limit: retry shortly",
                        retry_after_seconds=0.1,
                    )
                caller = self._admit(method, context)
                call.caller = caller.name
                current_caller.set(caller)
                return await behaviour(request, context)
            except BaseException as exc:
                await call.fail(exc, context)
                raise
            finally:
                self._calls -= 1
                call.log(context)

        return wrapped

    def _streaming(self, method: str, behaviour: Streaming) -> Streaming:
        async def wrapped(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            call = _Call(method)
            try:
                caller = self._admit(method, context)
                call.caller = caller.name
                current_caller.set(caller)
                async for response in behaviour(request, context):
                    yield response
            except BaseException as exc:
                await call.fail(exc, context)
                raise
            finally:
                call.log(context)

        return wrapped

    def _admit(self, method: str, context: ServicerContext) -> Any:
        caller = self._auth.authenticate(tuple(context.invocation_metadata() or ()))
        self._auth.authorize(caller, method)
        return caller


class _Call:
    """Book-keeping for one call's log line."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.caller = "-"
        self.started = time.perf_counter()
        self.code: grpc.StatusCode | None = None
        self.incident: str | None = None

    async def fail(self, exc: BaseException, context: ServicerContext) -> None:
        """Abort the call with the status ``exc`` stands for (or let grpc's own pass)."""
        if isinstance(exc, grpc.aio.AbortError):
            self.code = context.code() if isinstance(context.code(), grpc.StatusCode) else None
            return
        if isinstance(exc, WalletError):
            code, message, details = to_status(exc)
        elif isinstance(exc, NotImplementedError):
            code, message, details = grpc.StatusCode.UNIMPLEMENTED, "not implemented yet", b""
        elif isinstance(exc, Exception):
            self.incident = uuid.uuid4().hex[:12]
            log.error(
                "unexpected error in %s",
                self.method,
                exc_info=exc,
                extra={"incident": self.incident, "method": self.method},
            )
            code, message, details = internal_status(self.incident)
        else:  # cancellation and interpreter exits keep their own course
            self.code = grpc.StatusCode.CANCELLED
            return
        self.code = code
        metadata = ((STATUS_DETAILS_KEY, details),) if details else ()
        await context.abort(code, message, trailing_metadata=metadata)

    def log(self, context: ServicerContext) -> None:
        code = self.code or grpc.StatusCode.OK
        log.info(
            "%s %s %s",
            self.method,
            self.caller,
            code.name,
            extra={
                "method": self.method,
                "caller": self.caller,
                "code": code.name,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
                "incident": self.incident,
            },
        )

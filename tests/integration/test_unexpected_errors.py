"""An unexpected exception reaches the caller as a bare INTERNAL, and our logs keep the rest."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from wallet_service.api.auth import Authenticator
from wallet_service.api.edge import EdgeInterceptor
from wallet_service.config import Caller
from wallet_service.logs import JsonFormatter

TOKEN = "admin-token-for-errors"
METHOD = "/wallet.v1.AccountService/GetAccount"


async def _explode(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("lookup failed for 081234567890 with NIK 3171234567890001")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    # A real server with the real edge interceptor, serving one method that fails.
    server = grpc.aio.server(
        interceptors=[
            EdgeInterceptor(
                Authenticator({TOKEN: Caller("ops", frozenset({"admin"}))}),
                10,
                min_money_deadline_seconds=0.0,
                max_watch_streams=1,
                max_watch_streams_per_caller=1,
            )
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        "wallet.v1.AccountService",
        {"GetAccount": grpc.unary_unary_rpc_method_handler(_explode)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


async def test_unexpected_exception_is_internal_without_details(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"", metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5)

    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error.details() or ""
    assert details.startswith("internal error (incident ")
    assert "081234567890" not in details
    assert "lookup failed" not in details
    assert "Traceback" not in details

    incident = details.removeprefix("internal error (incident ").removesuffix(")")
    lines = [JsonFormatter().format(record) for record in caplog.records]
    logged = "\n".join(lines)
    # The stack trace is in our log under the incident id, with personal data masked.
    assert any(incident in line and "RuntimeError" in line for line in lines)
    assert "081234567890" not in logged
    assert "3171234567890001" not in logged
    assert any('"code": "INTERNAL"' in line for line in lines)

"""The transport tests run on asyncio's own loop and on uvloop, the service's loop: their
socket transports differ (uvloop's are not ``asyncio.Transport`` subclasses)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from .servers import Handler, Serve, Server, ok, stop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[tuple[asyncio.Server, Server]] = []

    async def start(handler: Handler = ok, *, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(handler)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
        servers.append((listening, server))
        server.port = listening.sockets[0].getsockname()[1]
        return server

    yield start
    for listening, server in servers:
        listening.close()
        await stop(server.tasks)

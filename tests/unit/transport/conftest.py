"""The transport tests run on asyncio's own loop and on uvloop, the service's loop: their
socket transports differ (uvloop's are not ``asyncio.Transport`` subclasses)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from .servers import Handler, Listeners, Serve, Server, ok


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    listeners = Listeners()

    async def start(handler: Handler = ok, *, tls: ssl.SSLContext | None = None) -> Server:
        return await listeners.start(Server(handler), tls)

    yield start
    await listeners.close()

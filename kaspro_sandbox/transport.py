"""Connection-level misbehaviour: dropping a connection without an answer, waiting for a
client that may leave.

ASGI gives an app no way to drop a connection, so a tiny middleware keeps the server's
transport in the scope: uvicorn's h11 and httptools protocols (the sandbox's server) pass
a bound `receive` whose owner holds the transport (asyncio's or uvloop's). Aborting that
transport with SO_LINGER 0 sends a TCP RST: the client reads a reset (httpx: `ReadError`,
or `RemoteProtocolError` when it only sees the end of the stream), never a status line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

TRANSPORT_SCOPE_KEY = "kaspro_sandbox.transport"


class TransportCapture:
    """ASGI middleware: puts the connection's transport (when it can be found) in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            owner = getattr(receive, "__self__", None)
            transport = getattr(owner, "transport", None)
            # Duck-typed: uvloop's transports are not asyncio.BaseTransport subclasses.
            if hasattr(transport, "abort") and hasattr(transport, "get_extra_info"):
                scope[TRANSPORT_SCOPE_KEY] = transport
        await self.app(scope, receive, send)


class NoAnswer(Response):
    """A response that sends nothing (the connection is already gone)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def abort_connection(scope: Scope) -> bool:
    """Drop the request's connection with a TCP RST; False when its transport is unknown."""
    transport: Any = scope.get(TRANSPORT_SCOPE_KEY)
    if transport is None or not hasattr(transport, "abort"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


async def until_disconnected(receive: Receive) -> None:
    """Return once the client has gone (the request body must have been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


# Watching the connection costs a task per call: not worth it for a wait this short.
WATCH_LONGER_WAITS_THAN_SECONDS = 1.0


async def hold(receive: Receive, seconds: float) -> bool:
    """Wait `seconds`, or less if the client goes away first; True when it went away.

    Nothing is listening for the answer then, so there is no point waiting longer. Waits
    of up to WATCH_LONGER_WAITS_THAN_SECONDS are only slept: False, whoever left.
    """
    if seconds <= 0:
        return False
    if seconds <= WATCH_LONGER_WAITS_THAN_SECONDS:
        await asyncio.sleep(seconds)
        return False
    waiter = asyncio.ensure_future(until_disconnected(receive))
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    if waiter in done:
        waiter.exception()  # retrieved: a receive that failed also means nobody listens
        return True
    return False

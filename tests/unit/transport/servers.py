"""Test servers for the transport tests: raw asyncio sockets, so that a test can answer
anything (a redirect, a gzip body, a slow or cut-short answer, bytes that are not HTTP)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wallet_service.kaspro.transport import WireRequest

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Listener:
    """A raw test server's bookkeeping: its port, its connection handlers (so that a test
    can end them) and how many connections ended. Subclasses say what a connection does."""

    closed: int = field(default=0, init=False)  # connections that ended, either side
    port: int = field(default=0, init=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.talk(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the test is over (Listeners.close)
        finally:
            self.closed += 1
            writer.close()

    async def talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class Server(Listener):
    """Answers each request with ``handler``; records requests, connections and closes."""

    handler: Handler
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            request = head + await reader.readexactly(length)
            self.requests.append(request)
            await self.handler(request, writer)
            await writer.drain()


L = TypeVar("L", bound=Listener)


class Listeners:
    """Starts test servers on free loopback ports; ``close`` stops them all and ends their
    connection handlers quietly (on Python 3.11 asyncio's streams log a cancelled handler
    as an error)."""

    def __init__(self) -> None:
        self._started: list[tuple[asyncio.Server, Listener]] = []

    async def start(self, one: L, tls: ssl.SSLContext | None = None) -> L:
        listening = await asyncio.start_server(one.serve, "127.0.0.1", 0, ssl=tls)
        self._started.append((listening, one))
        one.port = listening.sockets[0].getsockname()[1]
        return one

    async def close(self) -> None:
        for listening, one in self._started:
            listening.close()
            for task in one.tasks:
                task.cancel()
            await asyncio.gather(*one.tasks)


Serve = Callable[..., Awaitable[Server]]


def answer(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(
    port: int,
    path: str = "/x",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    scheme: str = "http",
    timeout: float = 2.0,
    connect_timeout: float = 1.0,
) -> WireRequest:
    url = f"{scheme}://127.0.0.1:{port}{path}"
    return WireRequest(method, url, headers or [], body, connect_timeout, timeout)


def request_line(request: bytes) -> bytes:
    return request.split(b"\r\n")[0]


async def ok(request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(answer("200 OK", request_line(request)))

"""Test servers for the transport tests: raw asyncio sockets, so that a test can answer
anything (a redirect, a gzip body, a slow or cut-short answer, bytes that are not HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wallet_service.kaspro.transport import WireRequest

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """Answers each request with ``handler``; records requests, connections and closes."""

    handler: Handler
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections that ended: closed or reset by the client, or the handler
    port: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        started(self.tasks)
        try:
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
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the test is over (see stop)
        finally:
            self.closed += 1
            writer.close()


def started(tasks: set[asyncio.Task[Any]]) -> None:
    task = asyncio.current_task()
    assert task is not None
    tasks.add(task)


async def stop(tasks: set[asyncio.Task[Any]]) -> None:
    """End a test server's connection handlers. They end quietly when cancelled: on
    Python 3.11 asyncio's streams log a cancelled handler as an error."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks)


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

"""The aiohttp transport under the KasPro client, against a real socket server.

The server is a raw asyncio one so that a test can answer anything: a redirect, a gzip
body, a slow answer, half an answer, or bytes that are not HTTP. Each test shows what the
client above sees: the same httpx responses and exceptions httpcore would give.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from wallet_service.kaspro.transport import AiohttpTransport

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """Answers each request with ``handler``; records every request and connection."""

    handler: Handler
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
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
        finally:
            writer.close()


Serve = Callable[[Handler], Awaitable[Server]]
MakeClient = Callable[..., httpx.AsyncClient]


def answer(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(listening)
        server.port = listening.sockets[0].getsockname()[1]
        return server

    yield start
    for listening in servers:
        listening.close()


@pytest.fixture
async def client() -> AsyncIterator[MakeClient]:
    clients: list[httpx.AsyncClient] = []

    def make(port: int, max_connections: int = 4) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            transport=AiohttpTransport(max_connections=max_connections),
            timeout=httpx.Timeout(2.0),
        )
        clients.append(made)
        return made

    yield make
    for made in clients:
        await made.aclose()


async def test_request_and_answer_pass_through_unchanged(serve: Serve, client: MakeClient) -> None:
    async def ok(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            answer("200 OK", b'{"code": 0}', "Content-Type: application/json", "X-Trace: a")
        )

    server = await serve(ok)
    http = client(server.port)

    response = await http.post(
        "/p2p-transaction/",
        params={"requestId": "ABC"},
        json={"amount": "50000"},
        headers={"Authorization": "Bearer t", "X-Signature": "s1g"},
    )

    assert response.status_code == 200
    assert response.json() == {"code": 0}
    assert response.headers["x-trace"] == "a"
    sent = server.requests[0]
    assert sent.startswith(b"POST /p2p-transaction/?requestId=ABC HTTP/1.1\r\n")
    head, _, body = sent.partition(b"\r\n\r\n")
    assert body == b'{"amount":"50000"}'
    lines = [line.lower() for line in head.split(b"\r\n")[1:]]
    assert b"authorization: bearer t" in lines
    assert b"x-signature: s1g" in lines
    assert b"content-type: application/json" in lines
    assert b"content-length: 18" in lines
    # httpx's Host and Content-Length are not sent twice next to aiohttp's own.
    assert sum(line.startswith(b"host:") for line in lines) == 1
    assert sum(line.startswith(b"content-length:") for line in lines) == 1


async def test_connections_are_kept_alive_and_reused(serve: Serve, client: MakeClient) -> None:
    async def ok(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", b"{}"))

    server = await serve(ok)
    http = client(server.port)

    for _ in range(5):
        assert (await http.get("/token")).status_code == 200

    assert (len(server.requests), server.connections) == (5, 1)


async def test_max_connections_bounds_the_open_connections(
    serve: Serve, client: MakeClient
) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(answer("200 OK", b"{}"))

    server = await serve(slow)
    http = client(server.port, max_connections=2)

    statuses = await asyncio.gather(*(http.get("/x") for _ in range(6)))

    assert [r.status_code for r in statuses] == [200] * 6
    assert server.connections == 2


async def test_a_redirect_is_returned_not_followed(serve: Serve, client: MakeClient) -> None:
    async def moved(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("302 Found", b"", "Location: http://127.0.0.1:1/elsewhere"))

    server = await serve(moved)
    http = client(server.port)

    response = await http.post("/bank-transfer/", json={})

    assert response.status_code == 302
    assert len(server.requests) == 1


async def test_a_gzip_body_is_decoded_by_httpx(serve: Serve, client: MakeClient) -> None:
    async def zipped(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", gzip.compress(b'{"code": 0}'), "Content-Encoding: gzip"))

    server = await serve(zipped)

    response = await client(server.port).get("/x")

    assert response.json() == {"code": 0}


async def test_a_slow_answer_is_a_read_timeout(serve: Serve, client: MakeClient) -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await serve(silent)

    with pytest.raises(httpx.ReadTimeout):
        await client(server.port).get("/x", timeout=httpx.Timeout(0.2))


async def test_a_refused_connection_is_a_connect_error(client: MakeClient) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]

    with pytest.raises(httpx.ConnectError):
        await client(port).get("/x")


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"code"',  # cut short
        b"",  # closed without a word
    ],
)
async def test_a_connection_closed_mid_answer_is_a_transport_error(
    serve: Serve, client: MakeClient, reply: bytes
) -> None:
    async def cut(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await serve(cut)

    with pytest.raises(httpx.TransportError):
        await client(server.port).get("/x")


async def test_bytes_that_are_not_http_are_a_protocol_error(
    serve: Serve, client: MakeClient
) -> None:
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    server = await serve(garbage)

    with pytest.raises(httpx.RemoteProtocolError):
        await client(server.port).get("/x")


async def test_a_closed_transport_refuses_new_requests(serve: Serve) -> None:
    async def ok(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", b"{}"))

    server = await serve(ok)
    transport = AiohttpTransport(max_connections=1)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", transport=transport)
    assert (await http.get("/x")).status_code == 200

    await http.aclose()

    with pytest.raises(RuntimeError):
        await transport.handle_async_request(
            httpx.Request("GET", f"http://127.0.0.1:{server.port}/")
        )

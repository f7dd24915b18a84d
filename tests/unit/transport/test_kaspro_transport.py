"""The KasPro client's transports, against a real socket server.

The server is a raw asyncio one so that a test can answer anything: a redirect, a gzip
body, a slow answer, half an answer, or bytes that are not HTTP. Each test runs on the
service's transport (``Http1Transport``), on the aiohttp one and on plain httpx behind
the same interface, and shows that the client gets the same thing from all three; and
each runs on asyncio's loop and on uvloop (conftest.py).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from wallet_service.kaspro.http1 import Http1Transport
from wallet_service.kaspro.transport import (
    AiohttpTransport,
    HttpxTransport,
    Transport,
    TransportError,
    TransportTimeout,
    WireRequest,
)

from .servers import Serve, answer, request

MakeTransport = Callable[..., Transport]


async def ok(request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(answer("200 OK", b"{}"))


@pytest.fixture(params=["http1", "aiohttp", "httpx"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[MakeTransport]:
    """The service's transport, the aiohttp one, or plain httpx behind the same interface."""
    made: list[Transport] = []

    def make(max_connections: int = 4) -> Transport:
        if request.param == "http1":
            one: Transport = Http1Transport(max_connections=max_connections)
        elif request.param == "aiohttp":
            one = AiohttpTransport(max_connections=max_connections)
        else:
            limits = httpx.Limits(max_connections=max_connections)
            one = HttpxTransport(httpx.AsyncHTTPTransport(limits=limits))
        made.append(one)
        return one

    yield make
    for one in made:
        await one.aclose()


async def test_request_and_answer_pass_through_unchanged(
    serve: Serve, transport: MakeTransport
) -> None:
    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", b'{"code": 0}', "Content-Type: application/json"))

    server = await serve(reply)

    got = await transport().send(
        request(
            server.port,
            "/gw/p2p-transaction/?requestId=ABC%2F1",
            method="POST",
            headers=[("Authorization", "Bearer t"), ("Content-Type", "application/json")],
            body=b'{"amount":"50000"}',
        )
    )

    assert (got.status, got.body) == (200, b'{"code": 0}')
    sent = server.requests[0]
    # The target is sent exactly as given (it is what the signature covers).
    assert sent.startswith(b"POST /gw/p2p-transaction/?requestId=ABC%2F1 HTTP/1.1\r\n")
    head, _, body = sent.partition(b"\r\n\r\n")
    assert body == b'{"amount":"50000"}'
    lines = [line.lower() for line in head.split(b"\r\n")[1:]]
    assert b"authorization: bearer t" in lines
    assert b"content-type: application/json" in lines
    assert b"content-length: 18" in lines
    assert sum(line.startswith(b"host:") for line in lines) == 1


async def test_connections_are_kept_alive_and_reused(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve(ok)
    one = transport()

    for _ in range(5):
        assert (await one.send(request(server.port))).status == 200

    assert (len(server.requests), server.connections) == (5, 1)


async def test_max_connections_bounds_the_open_connections(
    serve: Serve, transport: MakeTransport
) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(answer("200 OK", b"{}"))

    server = await serve(slow)
    one = transport(max_connections=2)

    answers = await asyncio.gather(*(one.send(request(server.port)) for _ in range(6)))

    assert [a.status for a in answers] == [200] * 6
    assert server.connections == 2


async def test_a_redirect_is_returned_not_followed(serve: Serve, transport: MakeTransport) -> None:
    async def moved(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("302 Found", b"", "Location: http://127.0.0.1:1/elsewhere"))

    server = await serve(moved)

    got = await transport().send(request(server.port, method="POST", body=b"{}"))

    assert got.status == 302
    assert len(server.requests) == 1


async def test_a_gzip_body_is_decoded(serve: Serve, transport: MakeTransport) -> None:
    async def zipped(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", gzip.compress(b'{"code": 0}'), "Content-Encoding: gzip"))

    server = await serve(zipped)

    assert (await transport().send(request(server.port))).body == b'{"code": 0}'


async def test_a_slow_answer_is_a_timeout(serve: Serve, transport: MakeTransport) -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await serve(silent)

    with pytest.raises(TransportTimeout):
        await transport().send(request(server.port, timeout=0.2))


async def test_a_refused_connection_is_a_connect_error(transport: MakeTransport) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]

    with pytest.raises(TransportError) as refused:
        await transport().send(request(port))

    assert refused.value.kind == "ConnectError"


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"code"',  # cut short
        b"",  # closed without a word
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
    ],
)
async def test_no_usable_answer_is_a_transport_error(
    serve: Serve, transport: MakeTransport, reply: bytes
) -> None:
    async def cut(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await serve(cut)

    with pytest.raises(TransportError) as failed:
        await transport().send(request(server.port))

    assert failed.value.kind in ("RemoteProtocolError", "ReadError")


async def test_a_closed_aiohttp_transport_refuses_new_requests(serve: Serve) -> None:
    server = await serve(ok)
    one = AiohttpTransport(max_connections=1)
    assert (await one.send(request(server.port))).status == 200

    await one.aclose()

    with pytest.raises(TransportError):
        await one.send(request(server.port))


async def test_the_aiohttp_transport_goes_through_the_proxy_the_environment_names(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server plays an HTTP proxy: it gets the request in absolute form.
    proxy = await serve(ok)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    one = AiohttpTransport(max_connections=1)
    try:
        got = await one.send(
            WireRequest("GET", "http://kaspro.invalid/customer-account-inquiry/", [], None, 1, 2)
        )
    finally:
        await one.aclose()

    assert got.status == 200
    assert proxy.requests[0].startswith(
        b"GET http://kaspro.invalid/customer-account-inquiry/ HTTP/1.1\r\n"
    )


async def test_the_aiohttp_transport_goes_direct_to_a_host_no_proxy_names(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await serve(ok)
    kaspro = await serve(ok)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    one = AiohttpTransport(max_connections=1)
    try:
        first = await one.send(request(kaspro.port, "/a"))
        second = await one.send(request(kaspro.port, "/b"))
    finally:
        await one.aclose()

    assert (first.status, second.status) == (200, 200)
    assert proxy.requests == []
    assert [r.split(b"\r\n")[0] for r in kaspro.requests] == [
        b"GET /a HTTP/1.1",
        b"GET /b HTTP/1.1",
    ]


async def test_a_chunked_answer_is_returned_whole(serve: Serve, transport: MakeTransport) -> None:
    parts = [b'{"code": 0, ', b'"data": "' + b"x" * 70_000 + b'"', b", ", b'"end": 1}']

    async def chunked(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:  # each chunk in a read of its own
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    server = await serve(chunked)

    got = await transport().send(request(server.port))

    assert (got.status, got.body) == (200, b"".join(parts))


async def test_an_answer_ended_by_the_server_closing_is_returned_whole(
    serve: Serve, transport: MakeTransport
) -> None:
    async def until_close(request: bytes, writer: asyncio.StreamWriter) -> None:
        # Neither Content-Length nor chunked: the body is whatever comes before the close.
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"code": ')
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"0}")
        await writer.drain()
        writer.close()

    server = await serve(until_close)

    got = await transport().send(request(server.port))

    assert (got.status, got.body) == (200, b'{"code": 0}')


async def test_after_connection_close_the_next_request_opens_a_new_connection(
    serve: Serve, transport: MakeTransport
) -> None:
    async def closing(request: bytes, writer: asyncio.StreamWriter) -> None:
        # The server says it closes but leaves the socket open: the client must not reuse it.
        writer.write(answer("200 OK", b"{}", "Connection: close"))

    server = await serve(closing)
    one = transport()

    first = await one.send(request(server.port, "/a"))
    second = await one.send(request(server.port, "/b"))

    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2
    assert [r.split(b"\r\n")[0] for r in server.requests] == [
        b"GET /a HTTP/1.1",
        b"GET /b HTTP/1.1",
    ]


async def test_a_late_answer_is_never_read_as_the_next_requests_answer(
    serve: Serve, transport: MakeTransport
) -> None:
    async def late_then_prompt(request: bytes, writer: asyncio.StreamWriter) -> None:
        if request.startswith(b"GET /first "):
            await asyncio.sleep(0.4)  # after the client has given up on it
            writer.write(answer("200 OK", b"late"))
        else:
            writer.write(answer("200 OK", b"second"))

    server = await serve(late_then_prompt)
    one = transport(max_connections=1)

    with pytest.raises(TransportTimeout):
        await one.send(request(server.port, "/first", timeout=0.15))
    got = await one.send(request(server.port, "/second"))

    assert (got.status, got.body) == (200, b"second")


async def test_an_interim_100_continue_is_skipped(serve: Serve, transport: MakeTransport) -> None:
    async def continue_then_answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(answer("200 OK", b'{"code": 0}'))

    server = await serve(continue_then_answer)
    one = transport()

    got = await one.send(request(server.port, method="POST", body=b"{}"))
    again = await one.send(request(server.port, method="POST", body=b"{}"))

    assert (got.status, got.body) == (200, b'{"code": 0}')
    assert (again.status, again.body) == (200, b'{"code": 0}')


async def test_a_deflate_body_is_decoded(serve: Serve, transport: MakeTransport) -> None:
    async def deflated(request: bytes, writer: asyncio.StreamWriter) -> None:
        body = zlib.compress(b'{"code": 0}')  # zlib-wrapped, as the RFC names "deflate"
        writer.write(answer("200 OK", body, "Content-Encoding: deflate"))

    server = await serve(deflated)

    assert (await transport().send(request(server.port))).body == b'{"code": 0}'


async def test_idle_connections_to_one_origin_do_not_starve_another(
    serve: Serve, transport: MakeTransport
) -> None:
    # With every place held by an idle connection to A, a request to B must not wait for
    # A's connection to expire (keepalive_seconds): an idle connection gives its place up.
    a = await serve(ok)
    b = await serve(ok)
    one = transport(max_connections=1)

    assert (await one.send(request(a.port))).status == 200
    got = await one.send(request(b.port, timeout=0.5))

    assert got.status == 200
    assert (len(a.requests), len(b.requests)) == (1, 1)

"""What only the service's own HTTP/1.1 client (``Http1Transport``) does, on real sockets.

test_kaspro_transport.py shows that it answers like aiohttp and httpx; these tests cover
what it does on its own: the requests it refuses before anything is sent, its pool (idle
connections expire and are swept, a place is never leaked, a connection that may still
carry someone else's answer is never reused), TLS with a certificate made here by the
``openssl`` command, and proxies (absolute form for plain HTTP, a ``CONNECT`` tunnel for
TLS, credentials as ``Proxy-Authorization``). Each runs on asyncio's loop and on uvloop
(conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wallet_service.kaspro import http1
from wallet_service.kaspro.http1 import Http1Transport
from wallet_service.kaspro.transport import (
    TransportError,
    TransportTimeout,
    WireRequest,
    WireResponse,
)

from .servers import (
    Handler,
    Listener,
    Listeners,
    Serve,
    Server,
    answer,
    request,
    request_line,
)

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


@dataclass
class Proxy(Listener):
    """Reads one request head per connection and records it. ``reply`` None: says nothing
    (until the client goes); a 200: tunnels both ways to the ``CONNECT`` target; anything
    else: is written, then the connection closed."""

    reply: bytes | None
    heads: list[bytes] = field(default_factory=list)

    async def talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        if self.reply is None:
            await reader.read()  # until the client closes
        elif self.reply.startswith(b"HTTP/1.1 200 "):
            target = head.split(b"\r\n")[0].split(b" ")[1].decode()
            host, _, port = target.rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(self.reply)
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        else:
            writer.write(self.reply)
            await writer.drain()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


StartProxy = Callable[[bytes | None], Awaitable[Proxy]]
MakeTransport = Callable[..., Http1Transport]


def header_lines(request: bytes) -> list[bytes]:
    head, _, _ = request.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[1:]


def basic(credentials: str) -> bytes:
    return b"Proxy-Authorization: Basic " + base64.b64encode(credentials.encode())


def first_answered_after(seconds: float) -> Handler:
    """Echoes each request line; ``GET /first`` only after ``seconds``."""

    async def handler(request: bytes, writer: asyncio.StreamWriter) -> None:
        if request.startswith(b"GET /first "):
            await asyncio.sleep(seconds)
        writer.write(answer("200 OK", request_line(request)))

    return handler


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (2 s at most) for something the loop does on its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


def unused_port() -> int:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port: int = unused.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the proxy a test names (the lower-case names win in urllib, so both go)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def proxy() -> AsyncIterator[StartProxy]:
    listeners = Listeners()

    async def start(reply: bytes | None) -> Proxy:
        return await listeners.start(Proxy(reply))

    yield start
    await listeners.close()


@pytest.fixture
async def transport() -> AsyncIterator[MakeTransport]:
    made: list[Http1Transport] = []

    def make(max_connections: int = 4, **options: Any) -> Http1Transport:
        one = Http1Transport(max_connections=max_connections, **options)
        made.append(one)
        return one

    yield make
    for one in made:
        await one.aclose()


# Requests refused before anything is sent


@pytest.mark.parametrize(
    "header",
    [
        ("X-Note", "a\r\nX-Injected: 1"),
        ("X-Note", "a\nX-Injected: 1"),
        ("X-Note", "a\r"),
        ("X-Note\r\nX-Injected", "1"),
        ("X-Note\n", "1"),
    ],
)
async def test_a_header_with_a_line_break_is_refused_and_nothing_is_sent(
    serve: Serve, transport: MakeTransport, header: tuple[str, str]
) -> None:
    server = await serve()
    one = transport()

    with pytest.raises(TransportError) as refused:
        await one.send(request(server.port, "/bad", headers=[("X-Fine", "1"), header]))
    await one.send(request(server.port, "/good"))  # whatever was sent before, arrived

    assert refused.value.kind == "InvalidRequest"
    assert [request_line(r) for r in server.requests] == [b"GET /good HTTP/1.1"]
    assert server.connections == 1


@pytest.mark.parametrize(
    "path", ["/x\r\nX-Injected: 1", "/x\nX-Injected: 1", "/x y", "/x#fragment"]
)
async def test_a_url_with_a_line_break_or_space_is_refused_and_nothing_is_sent(
    serve: Serve, transport: MakeTransport, path: str
) -> None:
    # The target goes on the request line as it is: a CR or LF would end the line there
    # and add a header (or a request) of its own; a space would split the line.
    server = await serve()
    one = transport()

    with pytest.raises(TransportError) as refused:
        await one.send(request(server.port, path))
    await one.send(request(server.port, "/good"))

    assert refused.value.kind == "InvalidURL"
    assert [request_line(r) for r in server.requests] == [b"GET /good HTTP/1.1"]


@pytest.mark.parametrize("method", ["HEAD", "CONNECT"])
async def test_methods_whose_answers_are_framed_differently_are_refused(
    serve: Serve, transport: MakeTransport, method: str
) -> None:
    server = await serve()
    one = transport()

    with pytest.raises(TransportError) as refused:
        await one.send(request(server.port, method=method))
    await one.send(request(server.port, "/good"))

    assert refused.value.kind == "InvalidRequest"
    assert [request_line(r) for r in server.requests] == [b"GET /good HTTP/1.1"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:{port}/x",
        "ws://127.0.0.1:{port}/x",
        "127.0.0.1:{port}/x",
        "http:///x",
        "http://127.0.0.1:port/x",
        "http://user:pass@127.0.0.1:{port}/x",
        "http://user@127.0.0.1:{port}/x",
    ],
    ids=["ftp", "ws", "no-scheme", "no-host", "bad-port", "user-and-password", "user"],
)
async def test_a_url_not_http_or_with_credentials_is_refused_and_nothing_is_sent(
    serve: Serve, transport: MakeTransport, url: str
) -> None:
    server = await serve()
    one = transport()

    with pytest.raises(TransportError) as refused:
        await one.send(WireRequest("GET", url.format(port=server.port), [], None, 1.0, 2.0))
    await one.send(request(server.port, "/good"))

    assert refused.value.kind == "InvalidURL"
    assert [request_line(r) for r in server.requests] == [b"GET /good HTTP/1.1"]


async def test_a_closed_transport_refuses_new_requests(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve()
    one = transport()
    await one.send(request(server.port))

    await one.aclose()

    with pytest.raises(TransportError) as refused:
        await one.send(request(server.port))
    assert refused.value.kind == "Closed"
    assert len(server.requests) == 1
    await eventually(lambda: server.closed == 1, "the idle connection closed")


async def test_a_url_with_a_query_and_no_path_asks_for_the_root(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve()

    got = await transport().send(request(server.port, "?x=1"))

    assert got.status == 200
    assert request_line(server.requests[0]) == b"GET /?x=1 HTTP/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in [
        line.lower() for line in server.requests[0].split(b"\r\n")
    ]


# Keep-alive: idle connections expire


async def test_an_idle_connection_older_than_keepalive_is_not_reused(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve()
    one = transport(keepalive_seconds=0.1)

    await one.send(request(server.port))
    await asyncio.sleep(0.25)
    got = await one.send(request(server.port))

    assert got.status == 200
    assert server.connections == 2


async def test_an_expired_connection_is_not_reused_even_before_the_sweeper_runs(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve()
    one = transport(keepalive_seconds=0.1)

    await one.send(request(server.port))
    # The loop is held: the sweeper cannot run, so only the pool's own check stands.
    time.sleep(0.15)  # noqa: ASYNC251
    got = await one.send(request(server.port))

    assert got.status == 200
    assert server.connections == 2


async def test_idle_connections_are_closed_by_the_sweeper(
    serve: Serve, transport: MakeTransport
) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)  # both requests in flight at once: two connections
        writer.write(answer("200 OK", b"{}"))

    server = await serve(slow)
    one = transport(keepalive_seconds=0.1)
    await asyncio.gather(one.send(request(server.port)), one.send(request(server.port)))
    assert (server.connections, one.open_connections) == (2, 2)

    await eventually(lambda: one.open_connections == 0, "the pool emptied")
    await eventually(lambda: server.closed == 2, "the server saw both connections close")


# The pool: waiting for a place, and never leaking one


async def test_a_request_that_times_out_waiting_for_a_connection_is_never_sent(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve(first_answered_after(0.3))
    one = transport(max_connections=1)
    first = asyncio.ensure_future(one.send(request(server.port, "/first")))
    await eventually(lambda: len(server.requests) == 1, "the first request arrived")

    with pytest.raises(TransportTimeout):
        await one.send(request(server.port, "/second", timeout=0.1))
    assert (await first).body == b"GET /first HTTP/1.1"
    third = await one.send(request(server.port, "/third", timeout=0.5))

    assert third.body == b"GET /third HTTP/1.1"
    assert [request_line(r) for r in server.requests] == [
        b"GET /first HTTP/1.1",
        b"GET /third HTTP/1.1",
    ]
    assert (server.connections, one.open_connections) == (1, 1)


async def test_a_refused_connection_gives_its_place_back(transport: MakeTransport) -> None:
    one = transport(max_connections=1)
    port = unused_port()

    for _ in range(3):
        with pytest.raises(TransportError) as refused:
            await one.send(request(port, timeout=0.5))
        assert refused.value.kind == "ConnectError"

    assert one.open_connections == 0


@pytest.mark.parametrize(
    ("reply", "close", "kind"),
    [
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"code"', True, "RemoteProtocolError"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{",
            True,
            "RemoteProtocolError",
        ),
        (b"", True, "RemoteProtocolError"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", True, "RemoteProtocolError"),
        # A complete answer, kept open, whose body cannot be decoded.
        (answer("200 OK", b"not gzip", "Content-Encoding: gzip"), False, "DecodingError"),
    ],
    ids=["cut-short", "cut-short-chunked", "closed", "not-http", "bad-gzip"],
)
async def test_a_failed_answer_gives_its_place_back(
    serve: Serve, transport: MakeTransport, reply: bytes, close: bool, kind: str
) -> None:
    async def fail_once(request: bytes, writer: asyncio.StreamWriter) -> None:
        if not request.startswith(b"GET /bad "):
            writer.write(answer("200 OK", b"good"))
            return
        writer.write(reply)
        if close:
            await writer.drain()
            writer.close()

    server = await serve(fail_once)
    one = transport(max_connections=1)

    with pytest.raises(TransportError) as failed:
        await one.send(request(server.port, "/bad"))
    assert failed.value.kind == kind
    assert one.open_connections == 0
    got = await one.send(request(server.port, "/good", timeout=0.5))

    assert got.body == b"good"
    assert server.connections == 2


async def test_a_timed_out_request_gives_its_place_back_and_its_connection_is_closed(
    serve: Serve, transport: MakeTransport
) -> None:
    async def silent_once(request: bytes, writer: asyncio.StreamWriter) -> None:
        if not request.startswith(b"GET /silent "):
            writer.write(answer("200 OK", b"good"))

    server = await serve(silent_once)
    one = transport(max_connections=1)

    with pytest.raises(TransportTimeout):
        await one.send(request(server.port, "/silent", timeout=0.1))
    assert one.open_connections == 0
    await eventually(lambda: server.closed == 1, "the server saw the connection close")
    got = await one.send(request(server.port, "/good", timeout=0.5))

    assert got.body == b"good"
    assert server.connections == 2


Cancel = Callable[[Awaitable[Any], Server], Awaitable[None]]


async def cancel_by_wait_for(pending: Awaitable[Any], server: Server) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pending, 0.1)  # the request is sent well within this


async def cancel_by_task_cancel(pending: Awaitable[Any], server: Server) -> None:
    task = asyncio.ensure_future(pending)
    await eventually(lambda: len(server.requests) == 1, "the request arrived")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("cancel", [cancel_by_wait_for, cancel_by_task_cancel])
async def test_a_cancelled_request_gives_its_place_back_and_its_connection_is_not_reused(
    serve: Serve, transport: MakeTransport, cancel: Cancel
) -> None:
    server = await serve(first_answered_after(0.3))
    one = transport(max_connections=1)

    await cancel(one.send(request(server.port, "/first")), server)
    assert len(server.requests) == 1  # it was sent: its answer is still to come
    assert one.open_connections == 0
    got = await one.send(request(server.port, "/second", timeout=0.5))

    assert got.body == b"GET /second HTTP/1.1"  # not the first's late answer
    assert server.connections == 2


async def test_a_request_cancelled_while_waiting_for_a_place_takes_nothing(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve(first_answered_after(0.2))
    one = transport(max_connections=1)
    first = asyncio.ensure_future(one.send(request(server.port, "/first")))
    await eventually(lambda: len(server.requests) == 1, "the first request arrived")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(one.send(request(server.port, "/waiting")), 0.05)
    await first
    got = await one.send(request(server.port, "/third", timeout=0.5))

    assert got.body == b"GET /third HTTP/1.1"
    assert [request_line(r) for r in server.requests] == [
        b"GET /first HTTP/1.1",
        b"GET /third HTTP/1.1",
    ]
    assert (server.connections, one.open_connections) == (1, 1)


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    serve: Serve, transport: MakeTransport
) -> None:
    async def answer_then_close(request: bytes, writer: asyncio.StreamWriter) -> None:
        # A keep-alive answer, then the server drops the connection (its idle limit).
        writer.write(answer("200 OK", request_line(request)))
        await writer.drain()
        writer.close()

    server = await serve(answer_then_close)
    one = transport(max_connections=1)

    await one.send(request(server.port, "/a"))
    await eventually(lambda: one.open_connections == 0, "the closed connection was let go")
    got = await one.send(request(server.port, "/b", timeout=0.5))

    assert got.body == b"GET /b HTTP/1.1"
    assert server.connections == 2


async def test_closing_the_transport_fails_the_requests_waiting_for_a_place(
    serve: Serve, transport: MakeTransport
) -> None:
    server = await serve(first_answered_after(0.1))
    one = transport(max_connections=1)
    first = asyncio.ensure_future(one.send(request(server.port, "/first")))
    await eventually(lambda: len(server.requests) == 1, "the first request arrived")
    waiting = asyncio.ensure_future(one.send(request(server.port, "/waiting")))
    await asyncio.sleep(0.01)  # it is now waiting for the one place

    await one.aclose()

    with pytest.raises(TransportError) as closed:
        await waiting
    assert closed.value.kind == "Closed"
    assert (await first).body == b"GET /first HTTP/1.1"  # the one under way completes
    assert one.open_connections == 0  # and its connection is not kept
    assert len(server.requests) == 1


# Bytes nobody asked for


@pytest.mark.parametrize("together", [True, False], ids=["with-the-answer", "later"])
async def test_bytes_sent_on_an_idle_connection_make_it_dropped(
    serve: Serve, transport: MakeTransport, together: bool
) -> None:
    stray = answer("200 OK", b"stray")

    async def chatty_first(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", request_line(request)))
        if request.startswith(b"GET /first "):
            if not together:
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(stray)

    server = await serve(chatty_first)
    one = transport(max_connections=1)

    first = await one.send(request(server.port, "/first"))
    await eventually(lambda: one.open_connections == 0, "the connection was dropped")
    await eventually(lambda: server.closed == 1, "the server saw it close")
    second = await one.send(request(server.port, "/second"))

    assert first.body == b"GET /first HTTP/1.1"
    assert second.body == b"GET /second HTTP/1.1"
    assert server.connections == 2


# TLS


def _self_signed(directory: Path, *names: str) -> tuple[Path, Path]:
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(certificate), "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=" + ",".join(names),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certificate, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for 127.0.0.1 and localhost."""
    return _self_signed(tmp_path_factory.mktemp("tls"), "IP:127.0.0.1", "DNS:localhost")


@pytest.fixture(scope="module")
def other_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for another name only."""
    return _self_signed(tmp_path_factory.mktemp("tls-other"), "DNS:other.invalid")


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


async def test_https_with_a_trusted_certificate_succeeds_and_reuses_the_connection(
    serve: Serve, transport: MakeTransport, certificate: tuple[Path, Path]
) -> None:
    server = await serve(tls=server_tls(certificate))
    one = transport(ssl_context=trusting(certificate))

    first = await one.send(request(server.port, "/a", scheme="https"))
    second = await one.send(request(server.port, "/b", scheme="https"))

    assert (first.status, first.body) == (200, b"GET /a HTTP/1.1")
    assert (second.status, second.body) == (200, b"GET /b HTTP/1.1")
    assert server.connections == 1
    assert b"Host: 127.0.0.1:%d" % server.port in header_lines(server.requests[0])


async def test_https_with_an_untrusted_certificate_is_a_connect_error(
    serve: Serve, transport: MakeTransport, certificate: tuple[Path, Path]
) -> None:
    server = await serve(tls=server_tls(certificate))
    one = transport(max_connections=1)  # the system's CAs, which never signed it

    with pytest.raises(TransportError) as refused:
        await one.send(request(server.port, scheme="https"))

    assert refused.value.kind == "ConnectError"
    assert server.requests == []
    assert one.open_connections == 0


async def test_https_with_a_certificate_for_another_name_is_a_connect_error(
    serve: Serve, transport: MakeTransport, other_certificate: tuple[Path, Path]
) -> None:
    server = await serve(tls=server_tls(other_certificate))
    one = transport(max_connections=1, ssl_context=trusting(other_certificate))

    with pytest.raises(TransportError) as refused:
        await one.send(request(server.port, scheme="https"))

    assert refused.value.kind == "ConnectError"
    assert server.requests == []
    assert one.open_connections == 0


# Proxies


async def test_https_goes_through_the_proxys_connect_tunnel_with_its_credentials(
    serve: Serve,
    proxy: StartProxy,
    transport: MakeTransport,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await serve(tls=server_tls(certificate))
    tunnel = await proxy(ESTABLISHED)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:p%40ss@127.0.0.1:{tunnel.port}")
    one = transport(ssl_context=trusting(certificate))

    first = await one.send(request(server.port, "/a?b=1", scheme="https"))
    second = await one.send(request(server.port, "/c", scheme="https"))

    assert (first.status, second.status) == (200, 200)
    assert len(tunnel.heads) == 1  # one tunnel, reused
    connect = tunnel.heads[0]
    assert request_line(connect) == b"CONNECT 127.0.0.1:%d HTTP/1.1" % server.port
    assert basic("user:p@ss") in header_lines(connect)
    # Inside the tunnel: the origin form, and the proxy's credentials stay with the proxy.
    assert [request_line(r) for r in server.requests] == [
        b"GET /a?b=1 HTTP/1.1",
        b"GET /c HTTP/1.1",
    ]
    assert not any(b"proxy-authorization" in r.lower() for r in server.requests)
    assert server.connections == 1


async def test_the_connect_target_names_the_port_even_when_it_is_the_default(
    proxy: StartProxy, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CONNECT's target is always host:port (RFC 9110, 9.3.6), 443 when the URL has none.
    tunnel = await proxy(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{tunnel.port}")
    one = transport(max_connections=1)

    with pytest.raises(TransportError):
        await one.send(WireRequest("GET", "https://kaspro.invalid/x", [], None, 1.0, 2.0))

    assert request_line(tunnel.heads[0]) == b"CONNECT kaspro.invalid:443 HTTP/1.1"


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 9\r\n\r\nlog in...",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        b"",  # closed without a word
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    ],
    ids=["407", "407-with-body", "403", "closed", "not-http"],
)
async def test_a_proxy_that_refuses_the_tunnel_is_a_proxy_error(
    serve: Serve,
    proxy: StartProxy,
    transport: MakeTransport,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    reply: bytes,
) -> None:
    server = await serve(tls=server_tls(certificate))
    tunnel = await proxy(reply)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:wrong@127.0.0.1:{tunnel.port}")
    one = transport(max_connections=1, ssl_context=trusting(certificate))

    for _ in range(2):  # and its place is given back each time
        with pytest.raises(TransportError) as refused:
            await one.send(request(server.port, scheme="https", timeout=0.5))
        assert refused.value.kind == "ProxyError"
        assert one.open_connections == 0
        if reply.startswith(b"HTTP/1.1 4"):  # the operator sees what the proxy said
            assert reply[9:12].decode() in str(refused.value)

    assert server.connections == 0


async def test_a_proxy_that_never_answers_connect_is_a_timeout_and_gives_the_place_back(
    proxy: StartProxy, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    tunnel = await proxy(None)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{tunnel.port}")
    one = transport(max_connections=1)

    # connect_timeout bounds the tunnel too.
    with pytest.raises(TransportTimeout):
        await one.send(request(unused_port(), scheme="https", connect_timeout=0.1))

    assert one.open_connections == 0
    await eventually(lambda: tunnel.closed == 1, "the proxy saw the connection close")


async def test_a_request_cancelled_while_the_tunnel_opens_gives_the_place_back(
    proxy: StartProxy, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    tunnel = await proxy(None)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{tunnel.port}")
    one = transport(max_connections=1)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(one.send(request(unused_port(), scheme="https")), 0.1)

    assert len(tunnel.heads) == 1
    assert one.open_connections == 0
    await eventually(lambda: tunnel.closed == 1, "the proxy saw the connection close")


async def test_plain_http_goes_to_the_proxy_in_absolute_form_with_its_credentials(
    serve: Serve, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server plays the proxy: it gets the whole URL on the request line.
    through = await serve()
    monkeypatch.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{through.port}")
    one = transport()

    first = await one.send(WireRequest("GET", "http://kaspro.invalid/a?b=1", [], None, 1, 2))
    second = await one.send(WireRequest("GET", "http://kaspro.invalid:8080/c", [], None, 1, 2))

    assert (first.status, second.status) == (200, 200)
    assert [request_line(r) for r in through.requests] == [
        b"GET http://kaspro.invalid/a?b=1 HTTP/1.1",
        b"GET http://kaspro.invalid:8080/c HTTP/1.1",
    ]
    assert b"Host: kaspro.invalid" in header_lines(through.requests[0])
    assert b"Host: kaspro.invalid:8080" in header_lines(through.requests[1])
    assert all(basic("user:p@ss") in header_lines(r) for r in through.requests)
    assert through.connections == 2  # one pool per origin, each to the proxy


async def test_plain_http_without_proxy_credentials_sends_no_proxy_authorization(
    serve: Serve, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    through = await serve()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{through.port}")
    one = transport()

    await one.send(WireRequest("GET", "http://kaspro.invalid/a", [], None, 1, 2))

    assert request_line(through.requests[0]) == b"GET http://kaspro.invalid/a HTTP/1.1"
    assert b"proxy-authorization" not in through.requests[0].lower()


async def test_a_host_no_proxy_names_is_reached_directly(
    serve: Serve, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    through = await serve()
    kaspro = await serve()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{through.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    one = transport()

    got = await one.send(request(kaspro.port, "/a"))

    assert got.body == b"GET /a HTTP/1.1"
    assert through.requests == []


async def test_the_proxy_environment_is_read_once_per_origin(
    serve: Serve, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    through = await serve()
    kaspro = await serve()
    one = transport()
    await one.send(request(kaspro.port, "/a"))

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{through.port}")
    await one.send(request(kaspro.port, "/b"))

    assert [request_line(r) for r in kaspro.requests] == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1"]
    assert through.requests == []


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Connection"])
async def test_a_framing_header_from_the_caller_is_refused_and_nothing_is_sent(
    serve: Serve, transport: MakeTransport, name: str
) -> None:
    # The transport writes these itself: a second copy would desynchronise the connection.
    server = await serve()
    one = transport()

    with pytest.raises(TransportError) as refused:
        await one.send(request(server.port, "/bad", headers=[(name, "1")]))
    await one.send(request(server.port, "/good"))

    assert refused.value.kind == "InvalidRequest"
    assert [request_line(r) for r in server.requests] == [b"GET /good HTTP/1.1"]


async def test_a_malformed_proxy_variable_is_an_invalid_url_error(
    transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:not-a-port")

    with pytest.raises(TransportError) as refused:
        await transport().send(request(unused_port()))

    assert refused.value.kind == "InvalidURL"


# Answers that are damaged are errors, never answers


async def one_answer(payload: bytes, *, reset: bool = False) -> WireResponse | TransportError:
    """What the transport makes of ``payload`` (then a close, or a reset) from a server."""

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        if reset:  # an RST instead of a FIN: the connection broke, it did not end
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    listening = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
    one = Http1Transport(max_connections=1)
    try:
        return await one.send(request(listening.sockets[0].getsockname()[1]))
    except TransportError as exc:
        return exc
    finally:
        await one.aclose()
        listening.close()


async def test_an_answer_ended_by_a_reset_is_cut_short_not_complete() -> None:
    got = await one_answer(b'HTTP/1.1 200 OK\r\n\r\n{"code":0,"data":{"amo', reset=True)

    assert isinstance(got, TransportError)
    assert got.kind == "RemoteProtocolError"


GZIPPED = gzip.compress(b'{"code": 0, "data": {"amount": "1000"}}')


@pytest.mark.parametrize(
    "body",
    [
        GZIPPED[: len(GZIPPED) // 2],
        GZIPPED + b"JUNK!",
        gzip.compress(b'{"code": 0,') + gzip.compress(b'"x": 1}'),
    ],
    ids=["cut-short", "trailing-bytes", "two-members"],
)
async def test_a_gzip_body_that_is_not_one_whole_stream_is_a_decoding_error(body: bytes) -> None:
    got = await one_answer(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )

    assert isinstance(got, TransportError)
    assert got.kind == "DecodingError"


async def test_two_content_encodings_are_a_decoding_error() -> None:
    got = await one_answer(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(GZIPPED) + GZIPPED
    )

    assert isinstance(got, TransportError)
    assert got.kind == "DecodingError"


async def test_a_trailer_does_not_change_how_the_body_is_read() -> None:
    got = await one_answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Encoding\r\n\r\n"
        b"2\r\n{}\r\n0\r\nContent-Encoding: gzip\r\n\r\n"
    )

    assert got == WireResponse(200, b"{}")


async def test_an_endless_answer_head_is_refused() -> None:
    got = await one_answer(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (1024 * 1024))

    assert isinstance(got, TransportError)
    assert got.kind == "RemoteProtocolError"
    assert "too large" in str(got)


async def test_a_request_the_server_stops_reading_times_out(transport: MakeTransport) -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    listening = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    body = b"x" * (32 * 1024 * 1024)  # far more than the socket buffers hold
    try:
        with pytest.raises(TransportTimeout):
            await asyncio.wait_for(
                transport().send(
                    WireRequest("POST", f"http://127.0.0.1:{port}/ekyc", [], body, 1.0, 0.3)
                ),
                timeout=10,  # only so that a regression fails instead of hanging
            )
    finally:
        listening.close()


async def test_an_answer_before_the_whole_request_went_out_leaves_the_connection_unused(
    transport: MakeTransport,
) -> None:
    # Answered early, the rest of the body would reach the server ahead of the next
    # request, whose answer would then be the server's answer to those bytes.
    connections: list[int] = []

    async def answers_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                await asyncio.sleep(0.3)  # reads nothing more for a while
                while await reader.read(1 << 20):
                    pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(answers_at_once, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    one = transport(max_connections=1)
    big = WireRequest("POST", f"http://127.0.0.1:{port}/a", [], b"x" * (32 * 1024 * 1024), 1, 5)
    try:
        first = await one.send(big)

        assert first == WireResponse(200, b"ok")
        assert one.open_connections == 0
        assert len(connections) == 1
    finally:
        listening.close()


async def test_a_cancelled_caller_whose_answer_came_does_not_disturb_the_next_one(
    serve: Serve, transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A's answer arrives and its connection goes back to the pool; in the same loop
    # pass B takes that connection and sends, then A's cancellation lands. A must not
    # tear down the connection B's request is now on.
    server = await serve()
    one = transport(max_connections=1)
    loop = asyncio.get_running_loop()
    started: dict[str, asyncio.Task[WireResponse]] = {}
    complete = http1._Connection._complete

    def complete_then_interleave(self: http1._Connection, *, keep_alive: bool) -> None:
        if "b" not in started:
            started["b"] = loop.create_task(one.send(request(server.port, "/b")))
        complete(self, keep_alive=keep_alive)
        if not started["a"].cancelling():
            started["a"].cancel()  # its deadline passed in this same loop pass

    monkeypatch.setattr(http1._Connection, "_complete", complete_then_interleave)
    started["a"] = loop.create_task(one.send(request(server.port, "/a")))
    with pytest.raises(asyncio.CancelledError):
        await started["a"]
    monkeypatch.setattr(http1._Connection, "_complete", complete)

    got = await asyncio.wait_for(started["b"], timeout=5)

    assert got.status == 200
    assert [request_line(r) for r in server.requests] == [
        b"GET /a HTTP/1.1",
        b"GET /b HTTP/1.1",
    ]

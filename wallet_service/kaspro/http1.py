"""A small HTTP/1.1 client for KasPro: one pool of keep-alive connections, nothing else.

Why it exists: per exchange aiohttp cost about 0.05 ms of CPU on this project's machine
(building its request and response objects, cookie and tracing hooks, a stream reader),
this about 0.01 ms — the difference was a tenth of a GetAccount (docs/performance.md).
It does only what the KasPro client needs, and refuses the rest:

- ``http://`` and ``https://`` (TLS verified against the system's CAs unless an
  ``ssl_context`` is given), keep-alive connections reused most-recent first, at most
  ``max_connections`` open (more requests wait for one, in turn), an idle connection
  closed after ``keepalive_seconds`` (a little before common servers drop theirs);
- ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` read once per origin: plain requests
  go to the proxy in absolute form, TLS goes through a ``CONNECT`` tunnel; credentials
  in the proxy URL become ``Proxy-Authorization``;
- answers framed by ``Content-Length``, chunked, or by the server closing; ``gzip`` and
  ``deflate`` bodies decoded; ``1xx`` interim answers skipped; a redirect returned as
  it is, never followed;
- ``connect_timeout`` bounds connecting (TLS and tunnel included), ``timeout`` bounds the
  wait for a free connection and each wait for the answer's next bytes.

Parsing is httptools (llhttp, the parser uvicorn uses). Nothing is retried here: a
request sent on a connection that then fails is an unknown outcome for the client to
resolve, exactly as with any other transport. A connection is reused only after a
complete answer to the request before it, so a late answer is never read as the answer
to the next request.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.parse
import urllib.request
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import httptools

from wallet_service.kaspro.transport import (
    TransportError,
    TransportTimeout,
    WireRequest,
    WireResponse,
)

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # far above any KasPro answer; a runaway is refused
MAX_HEAD_BYTES = 64 * 1024  # status line and headers
# Framing is ours to write: a caller's copy would desynchronise the connection.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_BODYLESS_METHODS = frozenset({"HEAD", "CONNECT"})  # their answers are framed differently


@dataclass(slots=True)
class _Origin:
    """Where requests for one ``scheme://host:port`` go, and its idle connections."""

    scheme: str
    host: str
    port: int
    host_header: str
    tls: bool
    proxy_host: str | None = None
    proxy_port: int = 0
    proxy_authorization: str | None = None
    idle: deque[_Connection] = field(default_factory=deque)

    @property
    def absolute_form(self) -> bool:
        """A plain request through a proxy names the whole URL on the request line."""
        return self.proxy_host is not None and not self.tls


class _Connection(asyncio.Protocol):
    """One socket and its parser; answers one request at a time."""

    def __init__(self, pool: Http1Transport, origin: _Origin, loop: asyncio.AbstractEventLoop):
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[WireResponse] | None = None
        self.counted = False  # holds one of the pool's places (set once connected)
        self.closed = False
        self.idle_since = 0.0
        self.last_data = 0.0
        self.read_timeout = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.reusable = False  # the answer is complete and the server keeps the connection
        self.stray = False  # bytes came that no request asked for
        # While a CONNECT tunnel is being set up, the proxy's answer is read raw.
        self.tunnel_answer: bytearray | None = None
        self.tunnel_waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.encoding = b""
        self.framed = False  # Content-Length or chunked; otherwise the answer ends at EOF
        self.headers_done = False
        self.head_bytes = 0
        self.unsent = 0  # request bytes still buffered at the last read-timeout check

    def _reset(self) -> None:
        self.status = 0
        self.chunks = []
        self.size = 0
        self.encoding = b""
        self.framed = False
        self.headers_done = False
        self.head_bytes = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel_answer is not None:
            self._tunnel_data(data)
            return
        if self.waiter is None:
            # Bytes nobody asked for: the connection's framing cannot be trusted.
            self.pool.discard(self)
            return
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(TransportError("RemoteProtocolError", f"not an HTTP answer: {exc}"))
            return
        if not self.headers_done and self.waiter is not None:
            # All of it was head, and the head is not over: the parser keeps it.
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._fail(TransportError("RemoteProtocolError", "answer head too large"))
                return
        if self.reusable:
            self.reusable = False
            transport = self.transport
            if self.stray or transport is None or transport.get_write_buffer_size():
                # Stray bytes, or an answer before all of the request went out (the rest
                # would reach the server ahead of the next request): not reused.
                self.pool.discard(self)
            else:
                self.pool.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        tunnel = self.tunnel_waiter
        if tunnel is not None and not tunnel.done():
            tunnel.set_exception(TransportError("ProxyError", "the proxy closed the connection"))
        if self.waiter is not None:
            if self.headers_done and not self.framed and exc is None:
                self._complete(keep_alive=False)  # the close was the end of the body
            elif self.headers_done:
                self._fail(TransportError("RemoteProtocolError", "the answer was cut short"))
            else:
                detail = str(exc) if exc else "the server closed the connection"
                self._fail(TransportError("RemoteProtocolError", detail))
        self.pool.discard(self)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.waiter is None:
            self.stray = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a chunked answer's trailer: it changes nothing already framed
        name = name.lower()
        if name == b"content-encoding":
            # Several encodings (or headers) are not something KasPro sends: refused.
            self.encoding = b"several" if self.encoding else value.strip().lower()
        elif name == b"content-length" or name == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        if self.status in (204, 304):
            self.framed = True

    def on_body(self, body: bytes) -> None:
        if self.waiter is None:
            return
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            self._fail(TransportError("RemoteProtocolError", "answer larger than allowed"))
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is None:
            return
        if 100 <= self.status < 200:  # an interim answer; the real one follows
            self._reset()
            return
        self._complete(keep_alive=self.parser.should_keep_alive())

    # The exchange

    def start(self, wire: list[bytes], timeout: float) -> asyncio.Future[WireResponse]:
        loop = self.loop
        self.waiter = waiter = loop.create_future()
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            self._fail(TransportError("ReadError", "the connection closed before the request"))
            return waiter
        transport.writelines(wire)
        self.unsent = 0
        self.read_timeout = timeout
        self.last_data = loop.time()
        self.timer = loop.call_at(self.last_data + timeout, self._check_timeout)
        return waiter

    def forget(self, waiter: asyncio.Future[WireResponse]) -> None:
        """The caller of ``waiter`` gave up (cancelled): whatever comes on this connection
        is unknown. Only while the connection still serves that caller: once its answer
        came, the connection may already carry another caller's request."""
        if self.waiter is waiter:
            self.waiter = None
            self._stop_timer()
            self.pool.discard(self)

    def _check_timeout(self) -> None:
        self.timer = None
        if self.waiter is None:
            return
        loop = self.loop
        unsent = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if unsent and (not self.unsent or unsent < self.unsent):
            # The request is still going out, and moved since the last check: the
            # server is reading it. Counted like an answer's bytes arriving.
            self.last_data = loop.time()
        self.unsent = unsent
        due = self.last_data + self.read_timeout
        if loop.time() < due:
            self.timer = loop.call_at(due, self._check_timeout)
            return
        self._fail(TransportTimeout(f"no answer within {self.read_timeout:.3f} s"))

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _complete(self, *, keep_alive: bool) -> None:
        waiter, self.waiter = self.waiter, None
        self._stop_timer()
        body = b"".join(self.chunks)
        status, encoding = self.status, self.encoding
        self._reset()
        if waiter is None or waiter.done():
            self.pool.discard(self)
            return
        if encoding and encoding != b"identity":
            try:
                body = _decoded(body, encoding)
            except (zlib.error, ValueError) as exc:
                self.pool.discard(self)
                waiter.set_exception(TransportError("DecodingError", str(exc)))
                return
        waiter.set_result(WireResponse(status, body))
        if keep_alive:
            self.reusable = True  # released once the rest of this read is parsed
        else:
            self.pool.discard(self)

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        self._stop_timer()
        self.pool.discard(self)  # never reused: what is left on it is unknown
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    # CONNECT tunnel through a proxy

    async def open_tunnel(self, origin: _Origin) -> None:
        assert self.transport is not None
        self.tunnel_answer = bytearray()
        self.tunnel_waiter = self.loop.create_future()
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        authority = f"{host}:{origin.port}"  # always host:port (RFC 9110, 9.3.6)
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if origin.proxy_authorization:
            lines.append(f"Proxy-Authorization: {origin.proxy_authorization}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        await self.tunnel_waiter

    def _tunnel_data(self, data: bytes) -> None:
        answer, waiter = self.tunnel_answer, self.tunnel_waiter
        assert answer is not None
        assert waiter is not None
        answer += data
        end = answer.find(b"\r\n\r\n")
        if end < 0:
            if len(answer) > 65536 and not waiter.done():
                waiter.set_exception(TransportError("ProxyError", "answer too long"))
            return
        self.tunnel_answer = None
        if waiter.done():
            return
        status_line = bytes(answer[: answer.find(b"\r\n")])
        parts = status_line.split(b" ", 2)
        if not (len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"):
            # A refusal (407, 403...) often has a body: the status line is what matters.
            waiter.set_exception(TransportError("ProxyError", status_line.decode("latin-1")[:200]))
        elif end + 4 < len(answer):
            # TLS has not started: the server cannot have spoken yet.
            waiter.set_exception(TransportError("ProxyError", "bytes after the proxy's answer"))
        else:
            waiter.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Http1Transport:
    """The service's way to KasPro (see the module's docstring). Created outside a loop;
    bound to the running loop on the first request."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_seconds: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._ssl_context = ssl_context
        self._origins: dict[tuple[str, str], _Origin] = {}
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def open_connections(self) -> int:
        """Connections open or being opened (for tests and metrics)."""
        return self._open

    async def send(self, request: WireRequest) -> WireResponse:
        if self._closed:
            raise TransportError("Closed", "the transport is closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        method = request.method
        if method in _BODYLESS_METHODS:
            raise TransportError("InvalidRequest", f"{method} is not supported")
        url = request.url
        if " " in url or "#" in url or not url.isprintable():  # the request line, as it is
            raise TransportError("InvalidURL", "a space, # or a control character in the URL")
        scheme, _, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        if "?" in netloc:  # a query and no path: http://host?x=1 asks for /?x=1
            netloc, _, query = netloc.partition("?")
            path = "?" + query
        origin = self._origins.get((scheme, netloc))
        if origin is None:
            origin = self._origin(scheme, netloc, request.url)
        target = request.url if origin.absolute_form else "/" + path
        wire = self._head(method, target, origin, request)
        connection = await self._acquire(loop, origin, request)
        waiter = connection.start(wire, request.timeout)
        try:
            return await waiter
        except BaseException:
            connection.forget(waiter)  # cancelled mid-exchange (after a failure: nothing to do)
            raise

    def _head(self, method: str, target: str, origin: _Origin, request: WireRequest) -> list[bytes]:
        headers = request.headers
        for name, _ in headers:
            if name.lower() in _RESERVED_HEADERS:
                raise TransportError("InvalidRequest", f"the {name} header is the transport's")
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
        # A CR or LF inside a name or value would start a header (or a request) of its own.
        if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
            raise TransportError("InvalidRequest", "a header contains a line break")
        body = request.body
        if body is not None:
            length = f"Content-Length: {len(body)}\r\n"
        else:
            length = "Content-Length: 0\r\n" if method in ("POST", "PUT", "PATCH") else ""
        proxy = ""
        if origin.absolute_form and origin.proxy_authorization:
            proxy = f"Proxy-Authorization: {origin.proxy_authorization}\r\n"
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n{lines}{proxy}"
            f"Accept-Encoding: gzip, deflate\r\n{length}\r\n"
        )
        try:
            encoded = head.encode("latin-1")
        except UnicodeEncodeError:
            encoded = head.encode("utf-8")
        return [encoded, body] if body else [encoded]

    def _origin(self, scheme: str, netloc: str, url: str) -> _Origin:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TransportError("InvalidURL", str(exc)) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname or scheme != parts.scheme:
            raise TransportError("InvalidURL", f"not an http(s) URL: {url[:100]}")
        if parts.username is not None or parts.password is not None:
            raise TransportError("InvalidURL", "credentials in the URL are not supported")
        tls = parts.scheme == "https"
        host = parts.hostname
        origin = _Origin(
            scheme=parts.scheme,
            host=host,
            port=port or (443 if tls else 80),
            host_header=netloc,
            tls=tls,
        )
        proxy = _proxy_for(parts.scheme, host)
        if proxy is not None:
            try:
                proxied = urllib.parse.urlsplit(proxy)
                proxy_port = proxied.port
            except ValueError as exc:
                raise TransportError("InvalidURL", f"the proxy URL: {exc}") from exc
            if proxied.scheme != "http" or not proxied.hostname:
                raise TransportError("InvalidURL", f"unsupported proxy {proxied.scheme}://")
            origin.proxy_host = proxied.hostname
            origin.proxy_port = proxy_port or 80
            if proxied.username is not None:
                user = urllib.parse.unquote(proxied.username)
                secret = urllib.parse.unquote(proxied.password or "")
                token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
                origin.proxy_authorization = f"Basic {token}"
        self._origins[(scheme, netloc)] = origin
        return origin

    # The pool

    async def _acquire(
        self, loop: asyncio.AbstractEventLoop, origin: _Origin, request: WireRequest
    ) -> _Connection:
        idle = origin.idle
        deadline = loop.time() + request.timeout
        while True:
            while idle:
                connection = idle.pop()
                transport = connection.transport
                if (
                    not connection.closed
                    and transport is not None
                    and not transport.is_closing()  # e.g. the server's EOF is being handled
                    and loop.time() - connection.idle_since < self._keepalive_seconds
                ):
                    return connection
                self.discard(connection)
            if self._closed:
                raise TransportError("Closed", "the transport is closed")
            if self._open < self._max_connections:
                break
            if self._close_oldest_idle():  # another origin's: its place is free now
                continue
            await self._wait_turn(loop, deadline)
        self._open += 1
        try:
            async with asyncio.timeout(request.connect_timeout):
                connection = await self._connect(loop, origin)
        except TimeoutError:
            self._give_back()
            raise TransportTimeout("connecting to KasPro timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._give_back()
            raise TransportError("ConnectError", str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._give_back()
            raise
        if connection.closed:  # lost between connecting and now
            self._give_back()
            raise TransportError("ConnectError", "the connection closed at once")
        connection.counted = True
        return connection

    async def _wait_turn(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Wait until a connection is given back (in turn), or fail at ``deadline``."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken, but not taking the turn: pass it on
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise TransportTimeout("no free KasPro connection in time") from None
            raise

    def _close_oldest_idle(self) -> bool:
        """Close the connection idle the longest (of any origin), for its place."""
        oldest: _Connection | None = None
        for origin in self._origins.values():
            if origin.idle and (oldest is None or origin.idle[0].idle_since < oldest.idle_since):
                oldest = origin.idle[0]
        if oldest is None:
            return False
        self.discard(oldest)
        return True

    def _give_back(self) -> None:
        self._open -= 1
        self._wake()

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: _Origin) -> _Connection:
        connection = _Connection(self, origin, loop)
        if origin.proxy_host is None:
            await loop.create_connection(
                lambda: connection,
                origin.host,
                origin.port,
                ssl=self._tls() if origin.tls else None,
                server_hostname=origin.host if origin.tls else None,
            )
            return connection
        await loop.create_connection(lambda: connection, origin.proxy_host, origin.proxy_port)
        if origin.tls:
            try:
                await connection.open_tunnel(origin)
                assert connection.transport is not None
                secured = await loop.start_tls(
                    connection.transport, connection, self._tls(), server_hostname=origin.host
                )
            except BaseException:
                connection.abort()
                raise
            if secured is None:
                raise TransportError("ConnectError", "the tunnel closed during TLS")
            connection.transport = secured
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def release(self, connection: _Connection) -> None:
        """A connection whose answer is complete, ready for the next request."""
        loop = self._loop
        if self._closed or connection.closed or loop is None:
            self.discard(connection)
            return
        connection.idle_since = loop.time()
        connection.origin.idle.append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive_seconds, self._sweep)
        self._wake()

    def discard(self, connection: _Connection) -> None:
        """Close ``connection`` for good and give its place back (once)."""
        if not connection.closed:
            connection.abort()
        if connection.counted:
            connection.counted = False
            idle = connection.origin.idle
            if idle and connection in idle:
                idle.remove(connection)
            self._give_back()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close connections idle for ``keepalive_seconds`` or longer."""
        self._sweeper = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        remaining = False
        for origin in self._origins.values():
            idle = origin.idle
            while idle and now - idle[0].idle_since >= self._keepalive_seconds:
                self.discard(idle[0])
            remaining = remaining or bool(idle)
        if remaining:
            self._sweeper = loop.call_later(self._keepalive_seconds / 2, self._sweep)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for origin in self._origins.values():
            while origin.idle:
                self.discard(origin.idle[0])
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:  # they wake, see the transport closed, and fail
            if not waiter.done():
                waiter.set_result(None)


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy the environment names for ``scheme`` (None if none, or NO_PROXY says so)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    # proxy_bypass_environment is the stdlib's NO_PROXY matcher (missing from typeshed).
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(host, proxies):
        return None
    return proxy


def _decoded(body: bytes, encoding: bytes) -> bytes:
    if encoding in (b"gzip", b"x-gzip"):
        return _inflate(body, 16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        try:
            return _inflate(body, zlib.MAX_WBITS)
        except zlib.error:  # many servers send raw deflate without the zlib wrapper
            return _inflate(body, -zlib.MAX_WBITS)
    raise ValueError(f"unsupported Content-Encoding {encoding.decode('latin-1')}")


def _inflate(body: bytes, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, MAX_ANSWER_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("decoded answer larger than allowed")
    out += inflater.flush()
    # A stream cut short, or followed by anything, is not the answer that was sent.
    if not inflater.eof:
        raise ValueError("the compressed answer is cut short")
    if inflater.unused_data:
        raise ValueError("bytes after the compressed answer")
    return out

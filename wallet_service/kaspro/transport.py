"""How the KasPro client's bytes reach KasPro: one HTTP exchange, nothing else.

The client builds a ``WireRequest`` (method, absolute URL, headers, body bytes, time
limits) and gets a ``WireResponse`` (status, body bytes) or one of two exceptions:
``TransportTimeout`` or ``TransportError``. Everything KasPro-specific (token,
signature, JSON, codes) stays in client.py.

``AiohttpTransport`` is the one the service uses: a single aiohttp connection pool.
httpx with httpcore over anyio cost 0.5-1.4 ms of CPU per exchange on this project's
machine, aiohttp about 0.05 ms (docs/performance.md), and even httpx's own request and
response objects cost more than the exchange; so the hot path builds none.
``HttpxTransport`` puts any httpx transport behind the same interface: the unit tests'
``httpx.MockTransport``, and the benchmark's plain-httpx baseline.

Both behave alike: redirects are never followed (the status is returned as it is, and
the client treats it as an unknown outcome), a ``Content-Encoding`` body is decoded, and
``connect_timeout`` / ``timeout`` bound connecting and each wait for the answer (the
client's deadline bounds the whole call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import yarl
from aiohttp.helpers import get_env_proxy_for_url


@dataclass(frozen=True, slots=True)
class WireRequest:
    method: str
    url: str  # absolute and already encoded, query string included
    headers: list[tuple[str, str]]
    body: bytes | None
    connect_timeout: float
    timeout: float  # the time left for the exchange; no read waits longer


@dataclass(frozen=True, slots=True)
class WireResponse:
    status: int
    body: bytes


class TransportTimeout(Exception):
    """No answer in time: whether KasPro acted is unknown."""


class TransportError(Exception):
    """No usable answer (refused, reset, not HTTP): whether KasPro acted is unknown.

    ``kind`` names what happened, in httpx's words (``ConnectError``, ``ReadError``,
    ``RemoteProtocolError``…), for the call log.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Transport(Protocol):
    async def send(self, request: WireRequest) -> WireResponse: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """One ``aiohttp`` connection pool: ``max_connections`` at most (more requests wait
    for one); an idle connection is closed after ``keepalive_seconds``, a little before
    common servers drop theirs (uvicorn's 5 s), so a request rarely meets a connection
    the server is just closing. The pool is created on the first request, inside the
    running event loop.

    ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` (and a proxy's credentials in
    ``.netrc``) are honoured, as httpx did: the way out to a partner that allows only
    known addresses is often a proxy. They are read once per KasPro origin, on its first
    request, not per request: aiohttp's own ``trust_env`` looks them up (netrc file
    included) in a worker thread on every request, which cost 0.2 ms of CPU and two
    thread hops per exchange (docs/performance.md). A changed environment takes a
    restart, as with httpx."""

    def __init__(self, *, max_connections: int, keepalive_seconds: float = 4.0) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._proxies: dict[
            tuple[str, str | None, int | None], tuple[yarl.URL | None, aiohttp.BasicAuth | None]
        ] = {}

    def _proxy(self, url: yarl.URL) -> tuple[yarl.URL | None, aiohttp.BasicAuth | None]:
        origin = (url.scheme, url.host, url.port)
        found = self._proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(url)
            except LookupError:  # none named, or NO_PROXY covers the host
                found = (None, None)
            self._proxies[origin] = found
        return found

    def _pool(self) -> aiohttp.ClientSession:
        if self._closed:
            raise TransportError("Closed", "the transport is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    limit_per_host=0,
                    keepalive_timeout=self._keepalive_seconds,
                ),
                # The client writes the headers it means; aiohttp adds only Host and
                # Content-Length (and Accept-Encoding, whose answers it decodes).
                skip_auto_headers=("User-Agent", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # the proxy is looked up once per origin (_proxy)
            )
        return self._session

    async def send(self, request: WireRequest) -> WireResponse:
        session = self._pool()
        try:
            # Already encoded: sent as is, so the signed path is the one on the wire.
            url = yarl.URL(request.url, encoded=True)
            proxy, proxy_auth = self._proxy(url)
            async with session.request(
                request.method,
                url,
                proxy=proxy,
                proxy_auth=proxy_auth,
                headers=request.headers,
                data=request.body,
                allow_redirects=False,
                # Per-socket limits, enforced by aiohttp's protocol (no task cancellation
                # to tangle with the client's own deadline around this call).
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=request.connect_timeout,
                    sock_read=request.timeout,
                ),
            ) as answer:
                return WireResponse(answer.status, await answer.read())
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportTimeout(str(exc) or "timeout") from exc
        except aiohttp.InvalidURL as exc:
            raise TransportError("InvalidURL", str(exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError("ConnectError", str(exc)) from exc
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,  # an answer aiohttp could not parse as HTTP
        ) as exc:
            raise TransportError("RemoteProtocolError", str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError("ReadError", str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class HttpxTransport:
    """Any ``httpx.AsyncBaseTransport`` (e.g. ``httpx.MockTransport``) as a ``Transport``."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def send(self, request: WireRequest) -> WireResponse:
        http_request = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body,
            extensions={
                "timeout": {
                    "connect": request.connect_timeout,
                    "read": request.timeout,
                    "write": request.timeout,
                    "pool": request.timeout,
                }
            },
        )
        try:
            response = await self._transport.handle_async_request(http_request)
            body = await response.aread()
        except httpx.TimeoutException as exc:
            raise TransportTimeout(str(exc) or "timeout") from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise TransportError(type(exc).__name__, str(exc)) from exc
        return WireResponse(response.status_code, body)

    async def aclose(self) -> None:
        await self._transport.aclose()

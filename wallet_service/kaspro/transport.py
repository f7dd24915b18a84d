"""The HTTP transport under the KasPro client: httpx's interface, aiohttp's connections.

httpx stays the client's interface (requests, responses, the exceptions the client
handles, and ``httpx.MockTransport`` in unit tests), but its own connection layer,
httpcore over anyio, cost about 0.5-1.4 ms of CPU per exchange on this project's
machine, against about 0.05 ms for aiohttp's (docs/performance.md). This transport
hands each request to one shared ``aiohttp`` connection pool and turns the answer back
into an ``httpx.Response``; aiohttp's errors become the httpx exceptions httpcore would
have raised, so nothing above this module knows the difference.

What it keeps from httpx's behaviour: redirects are not followed (the client refuses
them anyway), the body is passed on undecoded (httpx decodes ``Content-Encoding``
itself), and the request's ``timeout`` extension sets the connect and read timeouts.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
import yarl

# Headers aiohttp writes itself from the URL and the body; httpx's copies are dropped so
# they are not sent twice.
_SET_BY_AIOHTTP = frozenset({b"host", b"content-length", b"transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one ``aiohttp`` connection pool.

    ``max_connections`` bounds the open connections (requests beyond it wait for one);
    an idle connection is closed after ``keepalive_seconds``. The pool is created on the
    first request, inside the running event loop.
    """

    def __init__(self, *, max_connections: int, keepalive_seconds: float = 5.0) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _pool(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_seconds,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                # httpx already wrote the headers it wants; aiohttp adds none of its own.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._pool()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _SET_BY_AIOHTTP
        ]
        body = request.content if request.method not in ("GET", "HEAD") else None
        try:
            async with session.request(
                request.method,
                # Already encoded by httpx: sent as is, so the signed path is the sent one.
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=_timeout(request.extensions.get("timeout")),
            ) as answer:
                content = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=[(bytes(name), bytes(value)) for name, value in answer.raw_headers],
                    content=content,
                    request=request,
                    extensions={"http_version": b"HTTP/1.1"},
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(f"invalid URL: {exc}", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientResponseError as exc:
            # aiohttp could not parse the answer: not HTTP as httpx knows it either.
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _timeout(extension: Any) -> aiohttp.ClientTimeout:
    """httpx's per-request timeout dict (connect/read/write/pool) in aiohttp's terms."""
    if not isinstance(extension, dict):
        return aiohttp.ClientTimeout(total=None)
    return aiohttp.ClientTimeout(
        total=None,
        connect=extension.get("pool"),
        sock_connect=extension.get("connect"),
        sock_read=extension.get("read"),
    )

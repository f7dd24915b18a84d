"""uvicorn's HTTP/1.1 protocol (httptools) with the bounds the HTTP port needs and uvicorn
lacks: a cap on connections, and time limits on the arrival of a request's head and body.

uvicorn 0.55 closes a connection only through its keep-alive timer, which starts after a
response: a connection that sends nothing, or sends its head or body slowly, stays open
for ever, and ``limit_concurrency`` answers 503 only once a head has arrived. Each open
connection holds a file descriptor, and the process's descriptors are shared with the
gRPC port (docs/decisions/0001-callback-port-server.md, docs/operations.md).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wallet_service.config import Config
from wallet_service.metrics import Metrics

Phase = Literal["head", "body"]


def bounded_protocol(port_config: Config, port_metrics: Metrics) -> type[HttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=…)``: uvicorn makes one per
    connection with its own arguments, so the bounds (Config's http_* settings) travel
    as class attributes."""

    class BoundedHttpToolsProtocol(_Bounded):
        settings = port_config
        metrics = port_metrics

    return BoundedHttpToolsProtocol


class _Bounded(HttpToolsProtocol):
    settings: ClassVar[Config]
    metrics: ClassVar[Metrics]
    # The one deadline by which the client must have sent what we wait for, if any.
    _deadline: asyncio.TimerHandle | None = None
    _in_message = False
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Refused before anything is read, so the port never holds more descriptors than
        # its cap; uvicorn's connection set counts the ones being served.
        if len(self.connections) >= self.settings.http_max_connections:
            self._refused = True
            self.metrics.http_refused.inc()
            transport.abort()
            return
        super().connection_made(transport)
        self._arm("head")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:  # uvicorn never saw it
            return
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        if self._deadline is None:  # a request pipelined behind one we are answering
            self._arm("head")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False
        self._disarm()  # the request is whole: the wait is ours now, not the client's
        if self.cycle.response_complete and not self.pipeline and not self.transport.is_closing():
            # Answered before its body ended (a 404, 405, /healthz with a body): the
            # response's end armed nothing, and the body's bytes stopped uvicorn's
            # keep-alive timer, so the next head is due from now.
            self._arm("head")

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        # The next request's head is due within the head timeout of this response's end
        # (uvicorn's keep-alive timer also runs, and closes an idle connection sooner).
        if not pipelined and not self._in_message and not self.transport.is_closing():
            self._arm("head")

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.metrics.http_timed_out.labels("keep_alive").inc()
        super().timeout_keep_alive_handler()

    def _arm(self, phase: Phase) -> None:
        self._disarm()
        s = self.settings
        seconds = s.http_head_timeout_seconds if phase == "head" else s.http_body_timeout_seconds
        self._deadline = self.loop.call_later(seconds, self._expire, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, phase: Phase) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.metrics.http_timed_out.labels(phase).inc()
        # abort, not close: close waits to flush what we wrote (also after an answer
        # with Connection: close), and a client that never reads would keep the
        # descriptor all the same.
        self.transport.abort()

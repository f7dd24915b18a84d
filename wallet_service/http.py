"""The service's HTTP port: KasPro's callbacks, /healthz and /metrics (Starlette on uvicorn).

It speaks HTTP only: reading a bounded body, answering; what is done with a callback is
flows/callbacks.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wallet_service.config import Config
from wallet_service.flows.callbacks import CallbackReceiver, Reply, SparseLog
from wallet_service.http_protocol import bounded_protocol
from wallet_service.kaspro import CALLBACK_SIGNATURE_HEADER, CALLBACK_TIMESTAMP_HEADER
from wallet_service.metrics import CONTENT_TYPE, Metrics
from wallet_service.store.drifts import open_drifts
from wallet_service.store.rides import open_holds
from wallet_service.workers.reconciler import Reconciler

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callbacks/kaspro"
MAX_CALLBACK_BYTES = 64 * 1024
# The status each reply is sent with: KasPro resends a callback until it gets a 2xx.
_STATUS = {Reply.ACCEPTED: 200, Reply.REFUSED: 400, Reply.UNVERIFIED: 401}


class _SparseWarnings(logging.Filter):
    """uvicorn logs a WARNING for each malformed or upgrade request a client sends (on
    ``uvicorn.error``): anyone who reaches the port could fill the logs. Such lines pass
    at most once a minute, with how many there were."""

    def __init__(self) -> None:
        super().__init__()
        self._sparse = SparseLog(log, logging.WARNING)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        count = self._sparse.due()
        if count is None:
            return False
        record.msg, record.args = f"{record.getMessage()} ({count} since the last such line)", ()
        return True


_UVICORN_WARNINGS = _SparseWarnings()


def create_app(
    receiver: CallbackReceiver,
    reconciler: Reconciler,
    serving: Callable[[], bool],
    metrics: Metrics,
) -> Starlette:
    hang_ups = SparseLog(log, logging.INFO)
    metrics.serving.set_function(lambda: int(serving()))

    def too_large() -> Response:
        metrics.callbacks.labels("too_large").inc()
        # Connection: close makes uvicorn close the connection after the answer, so the
        # rest of the body is never read (not even to be thrown away).
        return JSONResponse(
            {"error": "callback too large"}, status_code=413, headers={"Connection": "close"}
        )

    async def callback(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_CALLBACK_BYTES:
            return too_large()
        # Read piece by piece and stop at the limit, whatever the framing: a chunked
        # body declares no length.
        raw = bytearray()
        try:
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_CALLBACK_BYTES:
                    return too_large()
        except ClientDisconnect:
            metrics.callbacks.labels("hung_up").inc()
            hang_ups.emit("callback senders hung up before the whole body arrived")
            return Response(status_code=400)  # nobody is left to read it
        reply = await receiver.receive(
            bytes(raw),
            request.headers.get(CALLBACK_TIMESTAMP_HEADER),
            request.headers.get(CALLBACK_SIGNATURE_HEADER),
        )
        status = _STATUS[reply]
        return JSONResponse({"status": "ok" if status == 200 else "rejected"}, status_code=status)

    async def healthz(request: Request) -> Response:
        ok = serving()
        return JSONResponse(
            {"status": "SERVING" if ok else "NOT_SERVING"}, status_code=200 if ok else 503
        )

    async def metrics_page(request: Request) -> Response:
        # The facts of the shared database, read now: every replica shows the same.
        backlog = await reconciler.backlog()
        metrics.unresolved_attempts.set(backlog.unresolved)
        metrics.oldest_unresolved_attempt.set(backlog.oldest_age_seconds)
        metrics.unresolved_attempts_overdue.set(int(backlog.overdue))
        metrics.frozen_operations.set(backlog.frozen)
        holds, escrow_idr = await open_holds(reconciler.db)
        metrics.holds_open.set(holds)
        metrics.holds_escrow.set(escrow_idr)
        metrics.drifts_open.set(await open_drifts(reconciler.db))
        # Writing ~2,000 series takes tens of ms: in a thread, the loop keeps serving
        # (docs/decisions/0002-prometheus-client.md).
        page = await asyncio.to_thread(metrics.exposition)
        return Response(page, media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route(CALLBACK_PATH, callback, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ]
    )


class _QuietServer(uvicorn.Server):
    """uvicorn inside our event loop, leaving signal handling to the service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningHttp:
    port: int
    _server: _QuietServer
    _task: asyncio.Task[None]

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=5)


async def start_http(app: Starlette, config: Config, metrics: Metrics) -> RunningHttp:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _UVICORN_WARNINGS not in uvicorn_log.filters:
        uvicorn_log.addFilter(_UVICORN_WARNINGS)
    host, port = config.http_listen.rsplit(":", 1)
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (no delayed-ACK stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    server = _QuietServer(
        uvicorn.Config(
            app,
            http=bounded_protocol(config, metrics),
            timeout_keep_alive=config.http_keep_alive_seconds,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    metrics.http_connections.set_function(lambda: len(server.server_state.connections))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="wallet-http")
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
    return RunningHttp(sock.getsockname()[1], server, task)

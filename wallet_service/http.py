"""The service's HTTP side: KasPro's callback receiver, /healthz and /metrics (Starlette).

A callback is verified on its raw bytes first; a verified one is stored raw, then
applied through the engine's one transition function, and acknowledged. One for a
reference we do not know yet is parked and tried again. One that cannot be verified is
not stored, trusted or acknowledged: a bounded sample of them is kept, and KasPro is
asked for the status instead, at most once per reference and period (MONEY-RULES rule 5,
docs/operations.md "The callback port").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wallet_service.config import Config
from wallet_service.domain.errors import Reason
from wallet_service.flows.engine import Applied, Engine, Result, State
from wallet_service.flows.top_ups import TopUps
from wallet_service.http_protocol import PortBounds, bounded_protocol
from wallet_service.kaspro import (
    CALLBACK_SIGNATURE_HEADER,
    CALLBACK_TIMESTAMP_HEADER,
    Callback,
    CallbackKind,
    KasProCallbackInvalid,
    KasProClient,
    TransferState,
    parse_callback,
    verify_callback,
)
from wallet_service.metrics import CONTENT_TYPE, Metrics
from wallet_service.store import money as rows
from wallet_service.workers.reconciler import Reconciler

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callbacks/kaspro"
MAX_CALLBACK_BYTES = 64 * 1024
# What is kept of an unverified callback: its first bytes, enough to tell what it was.
MAX_SAMPLE_BYTES = 1024
# A longer requestId is not one to ask KasPro about (ours have 16 characters, the
# sandbox's top-up requestIds 20).
MAX_REFERENCE_CHARS = 64
# Unverified top-ups asked about at once in one reconciler pass.
TOP_UP_CHECKS_PER_PASS = 16
# "Not found" answers before an unverified top-up is given up (KasPro's status may lag
# its callback; asked no sooner than the inquiry period apart).
NOT_FOUND_TRIES = 5


@dataclass(frozen=True)
class CallbackSettings:
    secrets: Sequence[str]  # current first, then the previous one during a rotation
    # What unverified callbacks may cost (Config's unverified_* settings).
    unverified_sample: int
    unverified_top_up_checks: int
    inquiry_period_seconds: float
    # A status inquiry's time limit (Config's kaspro_timeout_seconds).
    inquiry_timeout_seconds: float
    window_seconds: float = 300.0
    park_retry_seconds: float = 5.0
    driver_va_prefixes: Sequence[str] = ()
    driver_retail_prefixes: Sequence[str] = ()


class CallbackReceiver:
    def __init__(
        self,
        engine: Engine,
        top_ups: TopUps,
        kaspro: KasProClient,
        settings: CallbackSettings,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self._engine = engine
        self._top_ups = top_ups
        self._kaspro = kaspro
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._unverified_log = _Sparse(log, logging.WARNING)
        self._dropped_log = _Sparse(log, logging.ERROR)

    async def receive(self, raw: bytes, timestamp: str | None, signature: str | None) -> int:
        """Handle one delivery; the HTTP status to answer."""
        if not verify_callback(
            raw,
            timestamp,
            signature,
            self._settings.secrets,
            self._clock(),
            self._settings.window_seconds,
        ):
            await self._distrust(raw, unsigned=timestamp is None or signature is None)
            return 401
        callback_id = await rows.store_callback(
            self._engine.db, raw, timestamp or "", signature or "", self._clock()
        )
        try:
            callback = parse_callback(raw)
        except KasProCallbackInvalid as exc:
            await self._mark(callback_id, "rejected", detail=str(exc))
            self._metrics.callbacks.labels("malformed").inc()
            log.error("callback %d unreadable: %s", callback_id, exc)
            return 400
        verdict, status = await self._handle(callback_id, callback, tries=0)
        self._metrics.callbacks.labels(verdict).inc()
        return status

    async def retry_parked(self) -> int:
        """Try parked callbacks again, and confirm unverified top-ups with KasPro (the
        reconciler calls this); how many were tried."""
        now = self._clock()
        parked = await rows.parked_callbacks(self._engine.db, now, 100)
        for row in parked:
            await self._handle(
                int(row["id"]), parse_callback(bytes(row["raw"])), tries=int(row["tries"])
            )
        # One wave per pass, asked at once: a pass (and the attempts and holds the
        # reconciler settles after it) waits at most one inquiry's time limit for them,
        # however many an attacker queued.
        checks = await rows.due_top_up_checks(self._engine.db, now, TOP_UP_CHECKS_PER_PASS)
        outcomes = await asyncio.gather(
            *(self._confirm_top_up(check) for check in checks), return_exceptions=True
        )
        for check, outcome in zip(checks, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error("confirming top-up %s failed", check.reference, exc_info=outcome)
        await rows.forget_top_up_checks(
            self._engine.db, now - self._settings.inquiry_period_seconds
        )
        return len(parked) + len(checks)

    async def _confirm_top_up(self, check: rows.TopUpCheck) -> None:
        """A top-up told by a callback we could not verify: believe KasPro's status answer
        only. The unverified body only said which requestId to ask about (and, for the
        label, whether the number was a driver's)."""
        status = await self._kaspro.transaction_status(
            check.reference, timeout=self._settings.inquiry_timeout_seconds
        )
        now = self._clock()
        if (
            status.state is TransferState.SUCCEEDED
            and status.kind is CallbackKind.TOPUP
            and status.mobile_number is not None
            and status.amount_idr
            and status.reff_id
        ):
            created = await self._top_ups.record(
                status.reff_id,
                status.mobile_number,
                status.amount_idr,
                driver=self._is_driver(check.va_number, check.payment_code),
                channel=check.channel or "VA",
            )
            await rows.mark_top_up_check(
                self._engine.db, check.reference, "applied" if created else "duplicate", now
            )
        elif (
            status.state is TransferState.FAILED
            or status.state is TransferState.SUCCEEDED
            or (status.state is TransferState.NOT_FOUND and check.tries + 1 >= NOT_FOUND_TRIES)
        ):
            # FAILED, "not found" several times over (KasPro's status may lag its callback),
            # or a success that is not a top-up we could book (the branch above took the
            # ones we can): nothing to credit.
            why = (
                "KasPro's status is not a top-up credit"
                if status.state is TransferState.SUCCEEDED
                else "top-up not confirmed by KasPro"
            )
            log.log(
                logging.ERROR if status.state is TransferState.SUCCEEDED else logging.WARNING,
                "unverified top-up %s: %s",
                check.reference,
                why,
            )
            await rows.mark_top_up_check(
                self._engine.db, check.reference, "rejected", now, detail=why
            )
        else:
            # Never sooner than the inquiry period: an unverified body must not buy more
            # KasPro calls than that.
            delay = max(
                min(2.0 * 2 ** min(check.tries, 8), 300.0), self._settings.inquiry_period_seconds
            )
            await rows.mark_top_up_check(
                self._engine.db,
                check.reference,
                "waiting",
                now,
                detail=status.detail or "not confirmed yet",
                next_try_at=now + delay,
            )

    async def _handle(self, callback_id: int, callback: Callback, *, tries: int) -> tuple[str, int]:
        """Apply (or park) a verified callback; what was done and the HTTP status."""
        if callback.kind is CallbackKind.TOPUP:
            return await self._top_up(callback_id, callback)
        result = _result(callback)
        if result.state is State.UNKNOWN:
            # A status word we cannot read: ask KasPro rather than guess.
            await self._inquire_soon(callback.request_id)
            await self._mark(
                callback_id,
                "rejected",
                reference=callback.request_id,
                detail=callback.detail or "unknown status",
            )
            return "rejected", 200
        applied = await self._engine.apply(callback.request_id, result)
        if applied is not Applied.UNKNOWN_REFERENCE:
            await self._mark(callback_id, applied.value, reference=callback.request_id)
            return applied.value, 200
        log.warning("callback %d for unknown reference %s parked", callback_id, callback.request_id)
        # Backing off, but never giving up: the attempt may still be committed.
        delay = min(self._settings.park_retry_seconds * 2 ** min(tries, 10), 600.0)
        await self._mark(
            callback_id,
            "parked",
            reference=callback.request_id,
            next_try_at=self._clock() + delay,
        )
        return "parked", 200

    async def _top_up(self, callback_id: int, callback: Callback) -> tuple[str, int]:
        if (
            callback.state is not TransferState.SUCCEEDED
            or callback.mobile_number is None
            or not callback.amount_idr
        ):
            await self._mark(
                callback_id,
                "rejected",
                reference=callback.reff_id,
                detail="top-up callback without a credited amount and wallet",
            )
            # Answered 400: KasPro keeps the credit on record and retries; the raw body
            # stays in the callbacks table for a person to look at.
            log.error("callback %d: unusable top-up", callback_id)
            return "rejected", 400
        created = await self._top_ups.record(
            callback.reff_id,
            callback.mobile_number,
            callback.amount_idr,
            driver=self._is_driver(callback.va_number, callback.payment_code),
            channel=callback.channel or "VA",
        )
        verdict = "applied" if created else "duplicate"
        await self._mark(callback_id, verdict, reference=callback.reff_id)
        return verdict, 200

    def _is_driver(self, va_number: str, payment_code: str) -> bool:
        """Paid to a driver prefix: a DRIVER_DEPOSIT rather than a TOP_UP."""
        return any(va_number.startswith(p) for p in self._settings.driver_va_prefixes) or any(
            payment_code.startswith(p) for p in self._settings.driver_retail_prefixes
        )

    async def _distrust(self, raw: bytes, *, unsigned: bool) -> None:
        """An unverified callback: not stored, not trusted, never acknowledged. A sample of
        the newest is kept, and the KasPro reference it names is asked about at most once
        per inquiry period (MONEY-RULES rule 5, docs/operations.md)."""
        db, now = self._engine.db, self._clock()
        self._metrics.callbacks.labels("unverified").inc()
        self._unverified_log.emit("callbacks failed verification (answered 401)")
        dropped = await rows.keep_unverified_sample(
            db,
            raw[:MAX_SAMPLE_BYTES],
            len(raw),
            "unsigned" if unsigned else "bad signature",
            now,
            self._settings.unverified_sample,
        )
        self._metrics.unverified_samples_dropped.inc(dropped)
        untrusted = None
        with contextlib.suppress(KasProCallbackInvalid):
            untrusted = parse_callback(raw)
        if untrusted is None or not untrusted.request_id:
            return
        if untrusted.kind is not CallbackKind.TOPUP:
            await self._inquire_soon(
                untrusted.request_id, gap=self._settings.inquiry_period_seconds
            )
            return
        if len(untrusted.request_id) > MAX_REFERENCE_CHARS:
            return  # not a KasPro requestId: nothing to ask about
        # No attempt of ours to re-check: the reconciler asks KasPro about this requestId
        # (retry_parked) and records the top-up from its answer.
        queued = await rows.queue_top_up_check(
            db,
            rows.TopUpCheck(
                untrusted.request_id,
                untrusted.channel[:MAX_REFERENCE_CHARS],
                untrusted.va_number[:MAX_REFERENCE_CHARS],
                untrusted.payment_code[:MAX_REFERENCE_CHARS],
            ),
            now,
            self._settings.unverified_top_up_checks,
        )
        if queued == "full":
            self._metrics.top_up_checks_dropped.inc()
            self._dropped_log.emit(
                "unverified top-up callbacks not confirmed with KasPro: "
                "WALLET_UNVERIFIED_TOP_UP_CHECKS references on record already"
            )

    async def _inquire_soon(self, reference: str, *, gap: float = 0.0) -> None:
        async with self._engine.db.transaction() as tx:
            await rows.check_attempt_at(tx, reference, self._clock(), gap=gap)

    async def _mark(
        self,
        callback_id: int,
        status: str,
        *,
        reference: str = "",
        detail: str = "",
        next_try_at: float | None = None,
    ) -> None:
        async with self._engine.db.transaction() as tx:
            await rows.mark_callback(
                tx,
                callback_id,
                status,
                reference=reference,
                detail=detail,
                next_try_at=next_try_at,
            )


def _result(callback: Callback) -> Result:
    state = {
        TransferState.SUCCEEDED: State.SUCCEEDED,
        TransferState.FAILED: State.FAILED,
    }.get(callback.state, State.UNKNOWN)
    return Result(
        state=state,
        amount_idr=callback.amount_idr,
        fee_idr=callback.fee_idr,
        reff_id=callback.reff_id or None,
        mobile_number=callback.mobile_number,
        message=callback.message,
        reason=Reason.PROVIDER_REJECTED if state is State.FAILED else None,
        detail=callback.detail,
    )


class _Sparse:
    """Log a line at most once a minute, with how many happened since the last one: a
    flood must not become a flood of log lines."""

    def __init__(self, logger: logging.Logger, level: int, every_seconds: float = 60.0) -> None:
        self._logger = logger
        self._level = level
        self._every = every_seconds
        self._last = -math.inf
        self._count = 0

    def due(self) -> int | None:
        """Count one; how many to tell when a line is due, else None."""
        self._count += 1
        now = time.monotonic()
        if now - self._last < self._every:
            return None
        count, self._last, self._count = self._count, now, 0
        return count

    def emit(self, what: str) -> None:
        count = self.due()
        if count is not None:
            self._logger.log(self._level, "%s: %d since the last such line", what, count)


class _SparseWarnings(logging.Filter):
    """uvicorn logs a WARNING for each malformed or upgrade request a client sends (on
    ``uvicorn.error``): anyone who reaches the port could fill the logs. Such lines pass
    at most once a minute, with how many there were."""

    def __init__(self) -> None:
        super().__init__()
        self._sparse = _Sparse(log, logging.WARNING)

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
    hang_ups = _Sparse(log, logging.INFO)

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
        status = await receiver.receive(
            bytes(raw),
            request.headers.get(CALLBACK_TIMESTAMP_HEADER),
            request.headers.get(CALLBACK_SIGNATURE_HEADER),
        )
        return JSONResponse({"status": "ok" if status == 200 else "rejected"}, status_code=status)

    async def healthz(request: Request) -> Response:
        ok = serving()
        return JSONResponse(
            {"status": "SERVING" if ok else "NOT_SERVING"}, status_code=200 if ok else 503
        )

    async def metrics_page(request: Request) -> Response:
        backlog = await reconciler.backlog()
        metrics.unresolved_attempts.set(backlog.unresolved)
        metrics.oldest_unresolved_attempt.set(backlog.oldest_age_seconds)
        metrics.unresolved_attempts_overdue.set(int(backlog.overdue))
        metrics.frozen_operations.set(backlog.frozen)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

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
    bounds = PortBounds(
        max_connections=config.http_max_connections,
        head_timeout_seconds=config.http_head_timeout_seconds,
        body_timeout_seconds=config.http_body_timeout_seconds,
        keep_alive_seconds=config.http_keep_alive_seconds,
    )
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _UVICORN_WARNINGS not in uvicorn_log.filters:
        uvicorn_log.addFilter(_UVICORN_WARNINGS)
    host, port = config.http_listen.rsplit(":", 1)
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (no 40 ms ACK waits).
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
            http=bounded_protocol(bounds, metrics),
            timeout_keep_alive=bounds.keep_alive_seconds,
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

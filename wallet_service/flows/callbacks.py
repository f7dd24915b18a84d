"""KasPro's callbacks: what is done with each delivery, and the retries of those that wait.

A callback is verified on its raw bytes first; a verified one is stored raw, then
applied through the engine's one transition function, and acknowledged. One for a
reference we do not know yet is parked and tried again; one stored but never applied
(its receiver failed) is applied by a later pass. One that cannot be verified is
not stored, trusted or acknowledged: a bounded sample of them is kept, and KasPro is
asked for the status instead, at most once per reference and period (MONEY-RULES rule 5,
docs/operations.md "The callback port"). Each delivery logs under a trace id of its own,
and its apply under the trace id of the attempt it settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable

from wallet_service.config import Config
from wallet_service.domain.errors import Reason
from wallet_service.flows.backoff import backoff_seconds
from wallet_service.flows.engine import Applied, Engine, Result, State
from wallet_service.flows.top_ups import TopUps
from wallet_service.kaspro import (
    Callback,
    CallbackKind,
    KasProCallbackInvalid,
    KasProClient,
    TransferState,
    parse_callback,
    verify_callback,
)
from wallet_service.logs import current_trace_id, new_trace_id, traced
from wallet_service.metrics import Metrics
from wallet_service.store.attempts import attempt_trace_id, check_attempt_at
from wallet_service.store.callbacks import (
    TopUpCheck,
    claim_parked_callback,
    claim_parked_callback_now,
    claim_top_up_check,
    claim_unapplied_callback,
    due_top_up_checks,
    forget_top_up_checks,
    keep_unverified_sample,
    mark_callback,
    mark_top_up_check,
    parked_callbacks,
    queue_top_up_check,
    store_callback,
    unapplied_callbacks,
)
from wallet_service.store.database import Row

log = logging.getLogger(__name__)

SIGNATURE_WINDOW_SECONDS = 300.0  # how far a signed timestamp may be from our clock
# Backoffs (first, cap): a parked callback is never given up; an unverified top-up that
# KasPro does not confirm yet is asked about again, never sooner than the inquiry period.
PARK_RETRY_SECONDS, PARK_RETRY_MAX_SECONDS = 5.0, 600.0
TOP_UP_RECHECK_SECONDS, TOP_UP_RECHECK_MAX_SECONDS = 2.0, 300.0
# Per reconciler pass: parked callbacks tried, and unverified top-ups asked about at once.
PARKED_PER_PASS = 100
TOP_UP_CHECKS_PER_PASS = 16
# A pass claims each parked callback and top-up check it takes (every replica runs the
# pass): its next try is put off by WALLET_KASPRO_TIMEOUT_SECONDS (what bounds the one
# KasPro call a check makes) and this margin (the database work around it), so another
# replica's pass skips it, and takes it over once the claim lapses if this one died.
CLAIM_MARGIN_SECONDS = 10.0
# A verified callback is stored, then applied, then marked, each by Database.run (10 s of
# retries at most), with no KasPro call: one still 'received' this long after it was
# stored is one its receiver gave up on (the database was away, the route answered 500,
# or the process died). A pass applies it as the receiver would have, claimed as a
# parked one is; were its receiver still at work, the apply is idempotent besides.
# KasPro's resends may stop before the database is back: this keeps the credit.
UNAPPLIED_AFTER_SECONDS = 60.0
# "Not found" answers before an unverified top-up is given up (KasPro's status may lag
# its callback).
NOT_FOUND_TRIES = 5
# What is kept of an unverified callback: its first bytes, enough to tell what it was.
MAX_SAMPLE_BYTES = 1024
# A longer requestId is not one to ask KasPro about (ours have 16 characters, the
# sandbox's top-up requestIds 20).
MAX_REFERENCE_CHARS = 64


class Reply(enum.Enum):
    """What KasPro is told about a delivery."""

    ACCEPTED = "accepted"  # done with (applied, a duplicate, parked, ...): no resend
    REFUSED = "refused"  # signed but unusable: KasPro keeps it and resends
    UNVERIFIED = "unverified"  # not signed by KasPro: nothing was done with it


class CallbackReceiver:
    """Takes each callback delivery, and retries those that wait (the reconciler's pass)."""

    def __init__(
        self,
        engine: Engine,
        top_ups: TopUps,
        kaspro: KasProClient,
        config: Config,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self._engine = engine
        self._top_ups = top_ups
        self._kaspro = kaspro
        self._clock = clock
        self._metrics = metrics
        # Current first, then the previous one during a rotation.
        self._secrets = [
            s for s in (config.kaspro_callback_secret, config.kaspro_callback_secret_previous) if s
        ]
        self._driver_va = tuple(p.prefix for p in config.driver_va_prefixes)
        self._driver_retail = tuple(p.prefix for p in config.driver_retail_prefixes)
        self._config = config
        self._unverified_log = SparseLog(log, logging.WARNING)
        self._dropped_log = SparseLog(log, logging.ERROR)

    async def receive(self, raw: bytes, timestamp: str | None, signature: str | None) -> Reply:
        """Handle one delivery, under a new trace id."""
        with traced(new_trace_id()):
            return await self._receive(raw, timestamp, signature)

    async def _receive(self, raw: bytes, timestamp: str | None, signature: str | None) -> Reply:
        if not verify_callback(
            raw, timestamp, signature, self._secrets, self._clock(), SIGNATURE_WINDOW_SECONDS
        ):
            await self._distrust(raw, unsigned=timestamp is None or signature is None)
            return Reply.UNVERIFIED
        callback_id = await store_callback(
            self._engine.db, raw, timestamp or "", signature or "", self._clock()
        )
        try:
            callback = parse_callback(raw)
        except KasProCallbackInvalid as exc:
            await self._mark(callback_id, "rejected", detail=str(exc))
            self._metrics.callbacks.labels("malformed").inc()
            log.error("callback %d unreadable: %s", callback_id, exc)
            return Reply.REFUSED
        verdict, reply = await self._handle(callback_id, callback, tries=0)
        self._metrics.callbacks.labels(verdict).inc()
        return reply

    async def retry_parked(self) -> int:
        """Try parked callbacks again, apply those stored but never applied, and confirm
        unverified top-ups with KasPro (the reconciler calls this); how many were tried."""
        db, now = self._engine.db, self._clock()
        claimed_until = now + self._config.kaspro_timeout_seconds + CLAIM_MARGIN_SECONDS
        tried = 0
        for row in await parked_callbacks(db, now, PARKED_PER_PASS):
            if not await claim_parked_callback(db, int(row["id"]), now, claimed_until):
                continue  # another replica's pass took it
            tried += 1
            await self._again(row)
        stored_before = now - UNAPPLIED_AFTER_SECONDS
        for row in await unapplied_callbacks(db, now, stored_before, PARKED_PER_PASS):
            if not await claim_unapplied_callback(
                db, int(row["id"]), now, stored_before, claimed_until
            ):
                continue  # another replica's pass took it, or its receiver ended
            tried += 1
            log.warning("callback %d stored but never applied: applying it now", row["id"])
            await self._again(row)
        # One wave per pass, asked at once: a pass (and the attempts and holds the
        # reconciler settles after it) waits at most one inquiry's time limit for them,
        # however many an attacker queued.
        checks = [
            check
            for check in await due_top_up_checks(db, now, TOP_UP_CHECKS_PER_PASS)
            if await claim_top_up_check(db, check.reference, now, claimed_until)
        ]
        outcomes = await asyncio.gather(
            *(self._confirm_top_up(check) for check in checks), return_exceptions=True
        )
        for check, outcome in zip(checks, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error("confirming top-up %s failed", check.reference, exc_info=outcome)
        await forget_top_up_checks(db, now - self._config.unverified_inquiry_period_seconds)
        return tried + len(checks)

    async def retry_now(self, callback_id: int, next_try_at: float) -> str | None:
        """Handle parked callback ``callback_id`` now, out of its turn (an operator's
        retry), as a reconciler pass would: the word for what was done, or None when it is
        no longer parked with ``next_try_at`` (a pass took it, or it was handled)."""
        until = self._clock() + self._config.kaspro_timeout_seconds + CLAIM_MARGIN_SECONDS
        row = await claim_parked_callback_now(self._engine.db, callback_id, next_try_at, until)
        if row is None:
            return None
        try:
            callback = parse_callback(bytes(row["raw"]))
        except KasProCallbackInvalid as exc:
            await self._mark(callback_id, "rejected", detail=str(exc))
            return "rejected"
        verdict, _ = await self._handle(callback_id, callback, tries=int(row["tries"]))
        return verdict

    async def _again(self, row: Row) -> None:
        """Handle a stored callback again, as its receiver did (or would have). What fails
        is logged, not raised: one callback must not hold up the rest of the pass; it is
        tried again once its claim lapses."""
        callback_id = int(row["id"])
        try:
            try:
                callback = parse_callback(bytes(row["raw"]))
            except KasProCallbackInvalid as exc:
                await self._mark(callback_id, "rejected", detail=str(exc))
                log.error("callback %d unreadable: %s", callback_id, exc)
                return
            await self._handle(callback_id, callback, tries=int(row["tries"]))
        except Exception:
            log.exception("trying callback %d again failed", callback_id)

    async def _confirm_top_up(self, check: TopUpCheck) -> None:
        """A top-up told by a callback we could not verify: believe KasPro's status answer
        only. The unverified body only said which requestId to ask about (and, for the
        label, whether the number was a driver's)."""
        status = await self._kaspro.transaction_status(
            check.reference, timeout=self._config.kaspro_timeout_seconds
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
            await mark_top_up_check(
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
            await mark_top_up_check(self._engine.db, check.reference, "rejected", now, detail=why)
        else:
            # Never sooner than the inquiry period: an unverified body must not buy more
            # KasPro calls than that.
            delay = max(
                backoff_seconds(check.tries, TOP_UP_RECHECK_SECONDS, TOP_UP_RECHECK_MAX_SECONDS),
                self._config.unverified_inquiry_period_seconds,
            )
            await mark_top_up_check(
                self._engine.db,
                check.reference,
                "waiting",
                now,
                detail=status.detail or "not confirmed yet",
                next_try_at=now + delay,
            )

    async def _handle(
        self, callback_id: int, callback: Callback, *, tries: int
    ) -> tuple[str, Reply]:
        """Apply (or park) a verified callback; the word for what was done, and the reply."""
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
            return "rejected", Reply.ACCEPTED
        # Under the trace of the RPC that created the attempt: one grep follows it here.
        trace_id = await attempt_trace_id(self._engine.db, callback.request_id)
        with traced(trace_id or current_trace_id()):
            applied = await self._engine.apply(callback.request_id, result)
            if applied is not Applied.UNKNOWN_REFERENCE:
                log.info(
                    "callback %d for attempt %s: %s",
                    callback_id,
                    callback.request_id,
                    applied.value,
                )
                await self._mark(callback_id, applied.value, reference=callback.request_id)
                return applied.value, Reply.ACCEPTED
        log.warning("callback %d for unknown reference %s parked", callback_id, callback.request_id)
        # Backing off, but never giving up: the attempt may still be committed.
        delay = backoff_seconds(tries, PARK_RETRY_SECONDS, PARK_RETRY_MAX_SECONDS)
        await self._mark(
            callback_id,
            "parked",
            reference=callback.request_id,
            next_try_at=self._clock() + delay,
        )
        return "parked", Reply.ACCEPTED

    async def _top_up(self, callback_id: int, callback: Callback) -> tuple[str, Reply]:
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
            # Refused: KasPro keeps the credit on record and retries; the raw body stays
            # in the callbacks table for a person to look at.
            log.error("callback %d: unusable top-up", callback_id)
            return "rejected", Reply.REFUSED
        created = await self._top_ups.record(
            callback.reff_id,
            callback.mobile_number,
            callback.amount_idr,
            driver=self._is_driver(callback.va_number, callback.payment_code),
            channel=callback.channel or "VA",
        )
        verdict = "applied" if created else "duplicate"
        await self._mark(callback_id, verdict, reference=callback.reff_id)
        return verdict, Reply.ACCEPTED

    def _is_driver(self, va_number: str, payment_code: str) -> bool:
        """Paid to a driver prefix: a DRIVER_DEPOSIT rather than a TOP_UP."""
        return va_number.startswith(self._driver_va) or payment_code.startswith(self._driver_retail)

    async def _distrust(self, raw: bytes, *, unsigned: bool) -> None:
        """An unverified callback: not stored, not trusted, never acknowledged. A sample of
        the newest is kept, and the KasPro reference it names is asked about at most once
        per inquiry period (MONEY-RULES rule 5, docs/operations.md)."""
        db, now = self._engine.db, self._clock()
        self._metrics.callbacks.labels("unverified").inc()
        self._unverified_log.emit("callbacks failed verification (answered 401)")
        dropped = await keep_unverified_sample(
            db,
            raw[:MAX_SAMPLE_BYTES],
            len(raw),
            "unsigned" if unsigned else "bad signature",
            now,
            self._config.unverified_callback_sample,
        )
        self._metrics.unverified_samples_dropped.inc(dropped)
        untrusted = None
        with contextlib.suppress(KasProCallbackInvalid):
            untrusted = parse_callback(raw)
        if untrusted is None or not untrusted.request_id:
            return
        if untrusted.kind is not CallbackKind.TOPUP:
            await self._inquire_soon(
                untrusted.request_id, gap=self._config.unverified_inquiry_period_seconds
            )
            return
        if len(untrusted.request_id) > MAX_REFERENCE_CHARS:
            return  # not a KasPro requestId: nothing to ask about
        # No attempt of ours to re-check: the reconciler asks KasPro about this requestId
        # (retry_parked) and records the top-up from its answer.
        queued = await queue_top_up_check(
            db,
            TopUpCheck(
                untrusted.request_id,
                untrusted.channel[:MAX_REFERENCE_CHARS],
                untrusted.va_number[:MAX_REFERENCE_CHARS],
                untrusted.payment_code[:MAX_REFERENCE_CHARS],
            ),
            now,
            self._config.unverified_top_up_checks,
        )
        if queued == "full":
            self._metrics.top_up_checks_dropped.inc()
            self._dropped_log.emit(
                "unverified top-up callbacks not confirmed with KasPro: "
                "WALLET_UNVERIFIED_TOP_UP_CHECKS references on record already"
            )

    async def _inquire_soon(self, reference: str, *, gap: float = 0.0) -> None:
        await self._engine.db.run(
            lambda tx: check_attempt_at(tx, reference, self._clock(), gap=gap)
        )

    async def _mark(
        self,
        callback_id: int,
        status: str,
        *,
        reference: str = "",
        detail: str = "",
        next_try_at: float | None = None,
    ) -> None:
        await self._engine.db.run(
            lambda tx: mark_callback(
                tx,
                callback_id,
                status,
                reference=reference,
                detail=detail,
                next_try_at=next_try_at,
            )
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


class SparseLog:
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

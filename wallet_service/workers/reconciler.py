"""The reconciler: settles every open KasPro attempt, retries parked callbacks, and voids
holds past their lifetime. It works from the database alone, so it resumes after a
restart exactly where the last process stopped (MONEY-RULES rules 3, 5, 7). Each pass logs
under a trace id of its own, and the work on an attempt under the one stored with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wallet_service.domain.records import Attempt
from wallet_service.flows.engine import Engine
from wallet_service.flows.rides import RidePayments
from wallet_service.logs import current_trace_id, new_trace_id, traced
from wallet_service.store.attempts import due_attempts, open_attempt_stats
from wallet_service.store.database import Database
from wallet_service.store.transactions import frozen_count

log = logging.getLogger(__name__)

# Due attempts taken per pass, and how many of them are asked about at once.
ATTEMPTS_PER_PASS = 100
CONCURRENT_INQUIRIES = 16


@dataclass(frozen=True)
class Backlog:
    """What is not settled yet, for alerts."""

    unresolved: int
    oldest_age_seconds: float
    overdue: bool
    frozen: int  # operations frozen for review: each waits for a person


class Reconciler:
    def __init__(
        self,
        engine: Engine,
        rides: RidePayments,
        retry_parked: Callable[[], Awaitable[int]],
        *,
        interval_seconds: float,
        inquiry_timeout_seconds: float,
        overdue_after_seconds: float,
    ) -> None:
        self._engine = engine
        self._rides = rides
        self._retry_parked = retry_parked
        self._interval = interval_seconds
        self._slots = asyncio.Semaphore(CONCURRENT_INQUIRIES)
        self._inquiry_timeout = inquiry_timeout_seconds
        self._overdue_after = overdue_after_seconds

    async def run_once(self) -> int:
        """One pass, under a new trace id; returns how many attempts it asked KasPro about."""
        with traced(new_trace_id()):
            return await self._pass()

    async def _pass(self) -> int:
        due = await due_attempts(self._engine.db, self._engine.now(), ATTEMPTS_PER_PASS)

        async def settle(attempt: Attempt) -> None:
            async with self._slots:
                # A callback may settle it meanwhile: apply() then finds it final.
                with traced(attempt.trace_id or current_trace_id()):
                    await self._engine.inquire(attempt, timeout=self._inquiry_timeout)

        results = await asyncio.gather(*(settle(a) for a in due), return_exceptions=True)
        for attempt, result in zip(due, results, strict=True):
            if isinstance(result, Exception):
                with traced(attempt.trace_id or current_trace_id()):
                    log.error("reconciling %s failed", attempt.reference, exc_info=result)
        await self._retry_parked()
        await self._rides.expire_holds()
        return len(due)

    @property
    def db(self) -> Database:
        return self._engine.db

    async def backlog(self) -> Backlog:
        count, oldest = await open_attempt_stats(self._engine.db)
        age = 0.0 if oldest is None else max(self._engine.now() - oldest, 0.0)
        frozen = await frozen_count(self._engine.db)
        return Backlog(count, age, age > self._overdue_after, frozen)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
                backlog = await self.backlog()
                if backlog.overdue:
                    log.error(
                        "%d KasPro attempts unresolved; the oldest for %.0f s",
                        backlog.unresolved,
                        backlog.oldest_age_seconds,
                    )
            except Exception:
                log.exception("reconciler pass failed; trying again")
            await asyncio.sleep(self._interval)

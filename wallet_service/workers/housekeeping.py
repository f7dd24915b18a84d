"""Housekeeping loop: forgets idempotency keys and unverified callback samples past their
retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from wallet_service.logs import new_trace_id, traced
from wallet_service.store import idempotency
from wallet_service.store.callbacks import forget_unverified_samples
from wallet_service.store.database import Database

log = logging.getLogger(__name__)


async def run_housekeeping(
    db: Database,
    clock: Callable[[], float],
    *,
    idempotency_ttl_seconds: float,
    interval_seconds: float = 3600.0,
) -> None:
    """Purge decided idempotency keys, and the samples of unverified callbacks (they may
    hold a mobile number), older than the TTL, now and every interval."""
    while True:
        with traced(new_trace_id()):  # each pass logs under a trace id of its own
            try:
                before = clock() - idempotency_ttl_seconds
                purged = await idempotency.purge(db, before)
                if purged:
                    log.info("forgot %d idempotency keys past retention", purged)
                await forget_unverified_samples(db, before)
            except Exception:
                log.exception("housekeeping failed; trying again next interval")
        await asyncio.sleep(interval_seconds)

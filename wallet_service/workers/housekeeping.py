"""Housekeeping loop: forgets idempotency keys past their retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from wallet_service.store import idempotency
from wallet_service.store.database import Database

log = logging.getLogger(__name__)


async def run_housekeeping(
    db: Database,
    clock: Callable[[], float],
    *,
    idempotency_ttl_seconds: float,
    interval_seconds: float = 3600.0,
) -> None:
    """Purge decided idempotency keys older than the TTL, now and every interval."""
    while True:
        try:
            purged = await idempotency.purge(db, clock() - idempotency_ttl_seconds)
            if purged:
                log.info("forgot %d idempotency keys past retention", purged)
        except Exception:
            log.exception("housekeeping failed; trying again next interval")
        await asyncio.sleep(interval_seconds)

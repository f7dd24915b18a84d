"""Housekeeping forgets what is kept only for a while: decided idempotency keys and the
samples of unverified callbacks, past the retention."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from wallet_service.store.callbacks import keep_unverified_sample
from wallet_service.store.database import Database
from wallet_service.workers.housekeeping import run_housekeeping

NOW = 1_800_000_000.0
TTL = 72 * 3600.0


async def test_unverified_callback_samples_past_the_retention_are_forgotten(
    tmp_path: Path,
) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        for received_at in (NOW - TTL - 60, NOW - TTL + 60, NOW):
            await keep_unverified_sample(
                db, b'{"mobileNumber":"081234567890"}', 31, "unsigned", received_at, 100
            )
        loop = asyncio.create_task(run_housekeeping(db, lambda: NOW, idempotency_ttl_seconds=TTL))

        async def kept() -> list[float]:
            rows = await db.fetch_all("SELECT received_at FROM unverified_callbacks ORDER BY id")
            return [row["received_at"] for row in rows]

        for _ in range(1000):  # its first pass runs at once; give it up to 10 s
            if len(await kept()) < 3:
                break
            await asyncio.sleep(0.01)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop

        assert await kept() == [NOW - TTL + 60, NOW]
    finally:
        await db.close()

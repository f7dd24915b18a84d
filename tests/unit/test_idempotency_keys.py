"""Idempotency keys: a duplicate in flight waits; a key left by a dead process does not."""

from __future__ import annotations

from pathlib import Path

from wallet_service.store import idempotency
from wallet_service.store.database import Database

KEY = idempotency.Key("app", "Transfer", "req-1")
HASH = b"h" * 32


async def test_a_running_key_of_this_process_is_in_progress(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        first = await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        again = await idempotency.claim(db, KEY, HASH, 1001.0, 120.0)
        assert (first.kind, again.kind) == (
            idempotency.ClaimKind.NEW,
            idempotency.ClaimKind.IN_PROGRESS,
        )
    finally:
        await db.close()


async def test_a_key_held_by_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    dead = await Database.open(path)
    await idempotency.claim(dead, KEY, HASH, 1000.0, 120.0)
    async with dead.transaction() as tx:
        await idempotency.attach_operation(tx, KEY, "txn_1")
    await dead.close()  # the process is gone; its key is still 'running', lease unexpired

    alive = await Database.open(path)
    try:
        claim = await idempotency.claim(alive, KEY, HASH, 1001.0, 120.0)
        # Not REQUEST_IN_PROGRESS: the retry reports on the operation the dead one made.
        assert (claim.kind, claim.operation_id) == (idempotency.ClaimKind.REPLAY, "txn_1")
        other = await idempotency.claim(alive, KEY, b"x" * 32, 1001.0, 120.0)
        assert other.kind is idempotency.ClaimKind.REUSED
    finally:
        await alive.close()

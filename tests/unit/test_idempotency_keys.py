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


async def test_peek_answers_a_decided_key_and_a_reused_one_without_a_transaction(
    tmp_path: Path,
) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        assert await idempotency.peek(db, KEY, HASH) is None  # unknown: claim decides
        await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        assert await idempotency.peek(db, KEY, HASH) is None  # running: claim decides
        async with db.transaction() as tx:
            await idempotency.attach_operation(tx, KEY, "txn_1")
        await idempotency.complete(db, KEY, None)

        replay = await idempotency.peek(db, KEY, HASH)
        reused = await idempotency.peek(db, KEY, b"x" * 32)

        assert replay is not None
        assert (replay.kind, replay.operation_id) == (idempotency.ClaimKind.REPLAY, "txn_1")
        assert reused is not None
        assert reused.kind is idempotency.ClaimKind.REUSED
    finally:
        await db.close()


async def test_peek_does_not_see_a_decision_that_is_not_committed(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        async with db.transaction() as tx:
            await idempotency.complete_in(tx, KEY, b"outcome")
            # Another request peeks while this transaction is open (its coroutine
            # suspended here): the 'done' it would read could still be rolled back.
            assert await idempotency.peek(db, KEY, HASH) is None
        claim = await idempotency.peek(db, KEY, HASH)
        assert claim is not None
        assert (claim.kind, claim.stored) == (idempotency.ClaimKind.REPLAY, b"outcome")
    finally:
        await db.close()

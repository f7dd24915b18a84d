"""Review of issue 15 (task F): defects found in the replica change, each shown by a test
that fails on the reviewed code: those of the PostgreSQL engine (store/postgres.py). The
flight claim and resend grace ones are in test_replicas.py.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from postgres import ADMIN_URL, SKIP_REASON, fresh_database

from wallet_service.store.database import Database
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.events import append_event
from wallet_service.store.postgres import NUMBERING_LOCK

from .conftest import wait_for

postgres_only = pytest.mark.skipif(not ADMIN_URL, reason=SKIP_REASON)


@postgres_only
async def test_a_committed_transaction_does_not_wait_for_another_sessions_numbering() -> None:
    """Database.run numbers events after its commit, under the cluster-wide numbering
    lock, before returning: a session that holds that lock (a replica paused, partitioned
    or slow between its numbering UPDATE and COMMIT) holds every replica's committed
    writers, with a pool connection each; a caller's deadline then reports a failure for
    a transaction that committed (DatabaseBusy says "nothing was written")."""
    async with fresh_database("wt_f") as url:
        db = await Database.open(url, pool_size=3)
        holder = await asyncpg.connect(url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock($1)", NUMBERING_LOCK)

                async def body(tx: DbTx) -> str:
                    await append_event(tx, "TEST", "subject-1", {}, 1.0)
                    return "committed"

                run = asyncio.create_task(db.run(body))

                async def settled() -> bool:
                    waiting = await holder.fetchval(
                        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                    return run.done() or waiting > 0

                await wait_for(settled)
                committed = await holder.fetchval(
                    "SELECT COUNT(*) FROM events WHERE subject_id = 'subject-1'"
                )
                finished = run.done()
            assert await run == "committed"
            assert committed == 1
            assert finished, "run() committed, then waited on another session's numbering"
        finally:
            await holder.close()
            await db.close()


@postgres_only
async def test_a_programming_error_is_not_taken_for_a_lost_connection() -> None:
    """asyncpg.InterfaceError is in the "lost connection" set: a statement with a wrong
    number of arguments is retried for 10 s and answered DATABASE_BUSY (UNAVAILABLE, a
    status clients retry) instead of surfacing as the bug it is."""
    async with fresh_database("wt_f") as url:
        db = await Database.open(url, pool_size=2)
        try:
            with pytest.raises(asyncpg.InterfaceError):
                await db.run(
                    lambda tx: tx.execute(
                        "INSERT INTO otp_sends (mobile_number, sent_at) VALUES (?, ?)", ("x",)
                    )
                )
        finally:
            await db.close()


@postgres_only
async def test_event_numbering_does_not_depend_on_the_servers_default_isolation() -> None:
    """number_events opens its transaction at the server's default isolation and relies on
    READ COMMITTED (its UPDATE must see the previous step's numbers). A database set to
    ``default_transaction_isolation = serializable`` (a common hardening) makes concurrent
    steps fail with 40001, which number_events does not retry: run() then raises for
    transactions that committed."""
    async with fresh_database("wt_f") as url:
        admin = await asyncpg.connect(url)
        try:
            name = await admin.fetchval("SELECT current_database()")
            await admin.execute(
                f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'serializable'"
            )
        finally:
            await admin.close()
        replicas = [await Database.open(url, pool_size=5) for _ in range(2)]
        try:

            async def write(n: int) -> str:
                async def body(tx: DbTx) -> None:
                    await append_event(tx, "TEST", f"subject-{n}", {}, 1.0)

                try:
                    await replicas[n % 2].run(body)
                except Exception as exc:
                    return type(exc).__name__
                return "ok"

            outcomes = await asyncio.gather(*(write(n) for n in range(200)))
            row = await replicas[0].fetch_one("SELECT COUNT(*) AS n FROM events")
            assert row is not None
            assert row["n"] == 200  # every transaction committed
            assert set(outcomes) == {"ok"}, sorted(set(outcomes))
        finally:
            for db in replicas:
                await db.close()

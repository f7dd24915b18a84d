"""The PostgreSQL engine on a real server: SERIALIZABLE transactions retried on conflict,
lost connections, migrations once across replicas, and event numbering that never lets a
reader skip an event (store/postgres.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from postgres import ADMIN_URL, SKIP_REASON, fresh_database

from wallet_service.store.database import Database, SchemaTooNew, Transaction, latest_version

pytestmark = pytest.mark.skipif(not ADMIN_URL, reason=SKIP_REASON)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with fresh_database("wallet_unit") as fresh:
        yield fresh


async def _events(tx: Transaction, count: int) -> None:
    for _ in range(count):
        await tx.execute(
            "INSERT INTO events (event_id, type, subject_id, snapshot, occurred_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (uuid.uuid4().hex, "TEST", "s", "{}", 0.0),
        )
    tx.wrote_events = True


async def test_replicas_starting_together_migrate_once(url: str) -> None:
    replicas = await asyncio.gather(*(Database.open(url, pool_size=2) for _ in range(3)))
    try:
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch("SELECT version FROM schema_version")
        finally:
            await conn.close()
        assert [row["version"] for row in versions] == [latest_version("postgresql")]
    finally:
        for db in replicas:
            await db.close()


async def test_a_schema_newer_than_this_release_is_refused(url: str) -> None:
    await (await Database.open(url, pool_size=1)).close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE schema_version SET version = version + 1")
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this release knows"):
        await Database.open(url, pool_size=1)


async def test_conflicting_transactions_on_two_replicas_are_retried_not_lost(url: str) -> None:
    a = await Database.open(url, pool_size=5)
    b = await Database.open(url, pool_size=5)
    try:
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE counter (n BIGINT NOT NULL)")
        await conn.execute("INSERT INTO counter VALUES (0)")
        await conn.close()

        async def increment(tx: Transaction) -> None:
            row = await tx.fetch_one("SELECT n FROM counter")
            assert row is not None
            await asyncio.sleep(0.001)  # let the other replicas read the same value
            await tx.execute("UPDATE counter SET n = ?", (row["n"] + 1,))

        await asyncio.gather(*(db.run(increment) for db in (a, b) for _ in range(20)))
        row = await a.fetch_one("SELECT n FROM counter")
        assert row is not None
        assert row["n"] == 40
    finally:
        await a.close()
        await b.close()


async def test_a_connection_lost_before_commit_runs_the_body_again(url: str) -> None:
    db = await Database.open(url, pool_size=2)
    try:
        runs = 0

        async def body(tx: Transaction) -> None:
            nonlocal runs
            runs += 1
            await _events(tx, 1)
            if runs == 1:  # the server ends this very connection mid-transaction
                await tx.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        await db.run(body)
        assert runs == 2
        rows = await db.fetch_all("SELECT sequence FROM events")
        assert [row["sequence"] for row in rows] == [1]
    finally:
        await db.close()


async def test_every_connection_terminated_is_replaced(url: str) -> None:
    db = await Database.open(url, pool_size=3)
    try:
        await asyncio.gather(*(db.run(lambda tx: _events(tx, 1)) for _ in range(3)))
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        await db.run(lambda tx: _events(tx, 1))
        row = await db.fetch_one("SELECT COUNT(*) AS n FROM events WHERE sequence IS NOT NULL")
        assert row is not None
        assert row["n"] == 4
        assert await db.healthy()
    finally:
        await db.close()


async def test_readers_never_skip_an_event_written_by_concurrent_replicas(url: str) -> None:
    writers = [await Database.open(url, pool_size=4) for _ in range(2)]
    reader = await Database.open(url, pool_size=2)
    try:
        total = 2 * 30 * 3
        seen: list[int] = []

        async def read_until_all() -> None:
            while len(seen) < total:
                signal = reader.events_written
                rows = await reader.fetch_all(
                    "SELECT sequence FROM events WHERE sequence > ? ORDER BY sequence LIMIT 50",
                    (seen[-1] if seen else 0,),
                )
                seen.extend(row["sequence"] for row in rows)
                if not rows:
                    await asyncio.wait_for(signal.wait(), 5)

        async def write(db: Database) -> None:
            for _ in range(30):
                await db.run(lambda tx: _events(tx, 3))

        await asyncio.gather(read_until_all(), *(write(db) for db in writers))
        assert seen == list(range(1, total + 1))
    finally:
        for db in (*writers, reader):
            await db.close()

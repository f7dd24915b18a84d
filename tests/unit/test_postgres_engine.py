"""The PostgreSQL engine on a real server: SERIALIZABLE transactions retried on conflict,
lost connections, migrations once across replicas, and event numbering that never lets a
reader skip an event (store/postgres.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import asyncpg
import pytest
from postgres import ADMIN_URL, SKIP_REASON, fresh_database

from wallet_service.store import postgres
from wallet_service.store.database import (
    Database,
    Isolation,
    SchemaTooNew,
    Transaction,
    latest_version,
)
from wallet_service.store.postgres import NUMBERING_LOCK

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


async def numbered_sequences(db: Database) -> list[int]:
    """The events' numbers once every event has one (numbering follows the commit)."""
    for _ in range(200):
        rows = await db.fetch_all("SELECT sequence FROM events ORDER BY id")
        if all(row["sequence"] is not None for row in rows):
            return [row["sequence"] for row in rows]
        await asyncio.sleep(0.02)
    raise AssertionError("events were not numbered in time")


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


async def test_read_committed_behind_a_lock_lets_two_replicas_finish_two_legs(url: str) -> None:
    """Engine.apply's shape: each replica marks its leg done, then completes the operation
    if every leg is done. Without the lock both would read the other leg as open (the
    pause lets them overlap) and the operation would never complete (write skew)."""
    a = await Database.open(url, pool_size=5)
    b = await Database.open(url, pool_size=5)
    try:
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE op (id BIGINT PRIMARY KEY, done BOOLEAN NOT NULL)")
        await conn.execute("CREATE TABLE leg (op BIGINT, leg BIGINT, done BOOLEAN NOT NULL)")
        for op in range(10):
            await conn.execute("INSERT INTO op VALUES ($1, false)", op)
            await conn.execute("INSERT INTO leg VALUES ($1, 1, false), ($1, 2, false)", op)
        await conn.close()

        def apply(op: int, leg: int) -> Callable[[Transaction], Awaitable[None]]:
            async def body(tx: Transaction) -> None:
                assert await tx.lock("SELECT id FROM op WHERE id = ?", (op,)) is not None
                await tx.execute("UPDATE leg SET done = true WHERE op = ? AND leg = ?", (op, leg))
                await asyncio.sleep(0.01)
                open_legs = await tx.fetch_one(
                    "SELECT COUNT(*) AS n FROM leg WHERE op = ? AND NOT done", (op,)
                )
                assert open_legs is not None
                if open_legs["n"] == 0:
                    await tx.execute("UPDATE op SET done = true WHERE id = ?", (op,))

            return body

        await asyncio.gather(
            *(
                db.run(apply(op, leg), Isolation.READ_COMMITTED)
                for op in range(10)
                for db, leg in ((a, 1), (b, 2))
            )
        )
        rows = await a.fetch_all("SELECT done FROM op")
        assert [row["done"] for row in rows] == [True] * 10
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
        assert await numbered_sequences(db) == [1]
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
        assert await numbered_sequences(db) == [1, 2, 3, 4]
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


async def test_a_commit_does_not_wait_for_another_sessions_numbering(url: str) -> None:
    """A replica paused while it holds the numbering lock holds no other replica's
    writer: ``run`` returns once its transaction committed, and the events are numbered
    once the lock is free (review of issue 15, finding 3)."""
    db = await Database.open(url, pool_size=3)
    holder = await asyncpg.connect(url)
    try:
        signal = db.events_written
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", NUMBERING_LOCK)
            await asyncio.wait_for(db.run(lambda tx: _events(tx, 1)), 5)
            unnumbered = await holder.fetchval("SELECT COUNT(*) FROM events WHERE sequence IS NULL")
        assert unnumbered == 1
        await asyncio.wait_for(signal.wait(), 5)  # numbered once the lock was free
        rows = await db.fetch_all("SELECT sequence FROM events")
        assert [row["sequence"] for row in rows] == [1]
    finally:
        await holder.close()
        await db.close()


async def test_a_programming_error_is_not_taken_for_a_lost_connection(url: str) -> None:
    """A statement with a wrong number of arguments is the bug it is, at once, not a lost
    connection retried for 10 s and answered DATABASE_BUSY (finding 6)."""
    db = await Database.open(url, pool_size=2)
    try:
        with pytest.raises(asyncpg.InterfaceError):
            await asyncio.wait_for(
                db.run(
                    lambda tx: tx.execute(
                        "INSERT INTO otp_sends (mobile_number, sent_at) VALUES (?, ?)", ("x",)
                    )
                ),
                2,
            )
        assert await db.fetch_one("SELECT 1") is not None  # the pool is still usable
    finally:
        await db.close()


async def test_event_numbering_does_not_depend_on_the_servers_default_isolation(url: str) -> None:
    """With ``default_transaction_isolation = serializable`` on the database (a common
    hardening), concurrent numbering steps still run at READ COMMITTED: every write
    commits and is numbered once (finding 4)."""
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
        await asyncio.gather(*(replicas[n % 2].run(lambda tx: _events(tx, 1)) for n in range(200)))

        async def all_numbered() -> bool:
            row = await replicas[0].fetch_one(
                "SELECT COUNT(*) AS n, COUNT(DISTINCT sequence) AS numbered, "
                "MAX(sequence) AS top FROM events"
            )
            assert row is not None
            return bool(row["n"] == row["numbered"] == row["top"] == 200)

        for _ in range(100):
            if await all_numbered():
                break
            await asyncio.sleep(0.05)
        assert await all_numbered()
    finally:
        for db in replicas:
            await db.close()


async def test_health_follows_the_server_not_the_pool(url: str) -> None:
    """Health is the listening connection's answer, asked every second: a pool busy with
    load is not a server away (finding 9)."""
    db = await Database.open(url, pool_size=1)
    try:
        conn_taken = asyncio.Event()
        release = asyncio.Event()

        async def hold(tx: Transaction) -> None:
            conn_taken.set()
            await release.wait()

        holding = asyncio.create_task(db.run(hold))
        await conn_taken.wait()
        await asyncio.sleep(postgres.SWEEP_SECONDS * 2.5)
        assert await db.healthy()
        release.set()
        await holding
    finally:
        await db.close()


async def test_a_key_taken_meanwhile_runs_the_body_again_on_what_committed(url: str) -> None:
    """Two transactions that both read "no such row" and insert the same key: the loser
    runs again, reads the winner's row and decides on it, instead of failing with a
    unique violation (a ride authorized by two requests at once)."""
    a = await Database.open(url, pool_size=5)
    b = await Database.open(url, pool_size=5)
    try:
        both_read = asyncio.Barrier(2)

        async def insert_once(tx: Transaction) -> str:
            found = await tx.fetch_one("SELECT 1 FROM customers WHERE mobile_number = 'x'")
            if found is not None:
                return "found"
            with contextlib.suppress(asyncio.BrokenBarrierError):
                await asyncio.wait_for(both_read.wait(), 1)
            # Another table's key, as a ride and its attempt: the read above does not
            # cover it, so PostgreSQL reports 23505 rather than a serialization failure.
            await tx.execute("INSERT INTO otp_state (mobile_number) VALUES ('x')")
            await tx.execute("INSERT INTO customers (mobile_number) VALUES ('x')")
            return "inserted"

        outcomes = await asyncio.gather(a.run(insert_once), b.run(insert_once))
        assert sorted(outcomes) == ["found", "inserted"]
    finally:
        await a.close()
        await b.close()


async def test_a_body_that_collides_with_its_own_row_is_not_retried_for_long(url: str) -> None:
    db = await Database.open(url, pool_size=2)
    try:

        async def twice(tx: Transaction) -> None:
            await tx.execute("INSERT INTO otp_state (mobile_number) VALUES ('y')")
            await tx.execute("INSERT INTO otp_state (mobile_number) VALUES ('y')")

        with pytest.raises(asyncpg.UniqueViolationError):
            await asyncio.wait_for(db.run(twice), 5)
    finally:
        await db.close()


@pytest.mark.parametrize("amount", [1.5, True, Decimal("2")])
async def test_an_amount_that_is_not_an_int_is_refused_not_rounded(
    url: str, amount: object
) -> None:
    """A float, a bool or a Decimal bound to a BIGINT fails the statement; asyncpg's own
    codec would store 1.5 as 1 (docs/decisions/0011)."""
    db = await Database.open(url, pool_size=1)
    try:
        with pytest.raises(asyncpg.DataError, match="a BIGINT takes an int"):
            await db.run(
                lambda tx: tx.execute(
                    "INSERT INTO otp_state (mobile_number, failed_attempts) VALUES (?, ?)",
                    ("z", amount),
                )
            )
        assert await db.fetch_one("SELECT 1 FROM otp_state") is None
        await db.run(
            lambda tx: tx.execute(
                "INSERT INTO otp_state (mobile_number, failed_attempts) VALUES (?, ?)", ("z", 2)
            )
        )
        row = await db.fetch_one("SELECT failed_attempts FROM otp_state")
        assert row is not None
        assert row["failed_attempts"] == 2
    finally:
        await db.close()


async def test_events_written_just_before_close_are_numbered(url: str) -> None:
    """A replica that stops right after a commit numbers its events on the way out,
    rather than leave them to another replica's sweep."""
    db = await Database.open(url, pool_size=2)
    await db.run(lambda tx: _events(tx, 2))
    await db.close()
    other = await Database.open(url, pool_size=1)
    try:
        rows = await other.fetch_all("SELECT sequence FROM events ORDER BY id")
        assert [row["sequence"] for row in rows] == [1, 2]
    finally:
        await other.close()

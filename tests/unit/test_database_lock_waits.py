"""The connection never waits for a lock on the event loop: a statement refused because
another connection holds the lock is tried again after asynchronous pauses, for up to
LOCK_WAIT_SECONDS, then DatabaseBusy, with nothing written."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pytest_asyncio

from wallet_service.domain.errors import DatabaseBusy
from wallet_service.store import sqlite as database
from wallet_service.store.sqlite import SqliteDatabase


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    opened = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        yield opened
    finally:
        await opened.close()


@contextmanager
def other_connection(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


async def add_customer(db: SqliteDatabase, number: str) -> None:
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO customers (mobile_number, linked_at) VALUES (?, 1.0)", (number,)
        )


async def customers(db: SqliteDatabase) -> int:
    row = await db.fetch_one("SELECT COUNT(*) FROM customers")
    assert row is not None
    return int(row[0])


async def test_a_write_waits_for_the_lock_while_reads_answer(
    db: SqliteDatabase, tmp_path: Path
) -> None:
    with other_connection(tmp_path / "w.db") as other:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(add_customer(db, "+6281200000001"))
        await asyncio.sleep(0.1)  # it has been refused at least once and pauses

        assert await customers(db) == 0  # a read answers meanwhile
        assert not write.done()

        other.execute("COMMIT")
    await write

    assert await customers(db) == 1


async def test_past_the_wait_a_write_is_database_busy_and_runs_nothing(
    db: SqliteDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "LOCK_WAIT_SECONDS", 0.2)
    ran = False
    with other_connection(tmp_path / "w.db") as other:
        other.execute("BEGIN IMMEDIATE")

        with pytest.raises(DatabaseBusy):
            async with db.transaction():
                ran = True

        assert not ran
        assert not db.in_transaction
        other.execute("ROLLBACK")
    await add_customer(db, "+6281200000001")  # once the lock is free, writes go on

    assert await customers(db) == 1


async def test_opening_waits_while_another_connection_holds_the_database_exclusively(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    await (await SqliteDatabase.open_file(str(path))).close()
    with other_connection(path) as other:
        # From its first read on, an exclusive-mode connection keeps every other out,
        # readers included, until it closes.
        other.execute("PRAGMA locking_mode = EXCLUSIVE")
        other.execute("SELECT COUNT(*) FROM customers").fetchone()
        asyncio.get_running_loop().call_later(0.2, other.close)

        db = await SqliteDatabase.open_file(str(path))  # its reads are refused until then
    try:
        assert await customers(db) == 0
    finally:
        await db.close()


async def test_an_error_other_than_a_lock_is_raised_at_once(db: SqliteDatabase) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await db.fetch_one("SELECT * FROM no_such_table")

"""WAL checkpoints run in the background, off the event loop, and stop with the database."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from wallet_service.store import sqlite as database
from wallet_service.store.sqlite import SqliteDatabase


def rows_in_the_database_file_alone(path: Path, tmp_path: Path) -> int:
    """What a reader of the main file without its WAL sees: only checkpointed pages."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0])
    except sqlite3.OperationalError:  # not even the tables are there yet
        return 0
    finally:
        conn.close()


async def add_customers(db: SqliteDatabase, count: int) -> None:
    async with db.transaction() as tx:
        for n in range(count):
            await tx.execute(
                "INSERT INTO customers (mobile_number, linked_at) VALUES (?, 1.0)",
                (f"+62812{n:08d}",),
            )


async def test_committed_pages_reach_the_database_file_without_the_loop_checkpointing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    db = await SqliteDatabase.open_file(str(path))
    try:
        await add_customers(db, 50)  # far below the loop's own checkpoint threshold

        for _ in range(100):
            if rows_in_the_database_file_alone(path, tmp_path) == 50:
                break
            await asyncio.sleep(database.CHECKPOINT_INTERVAL_SECONDS / 2)
        assert rows_in_the_database_file_alone(path, tmp_path) == 50
    finally:
        await db.close()


async def test_the_loop_keeps_a_bounded_checkpoint_of_its_own(tmp_path: Path) -> None:
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        (pages,) = await db.fetch_all("PRAGMA wal_autocheckpoint")
        assert pages[0] == database.FOREGROUND_CHECKPOINT_PAGES
    finally:
        await db.close()


async def test_closing_stops_the_checkpoints_and_leaves_no_wal(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    db = await SqliteDatabase.open_file(str(path))
    await add_customers(db, 10)

    await db.close()

    assert not [t for t in asyncio.all_tasks() if t.get_name() == "checkpoints"]
    assert not path.with_name("w.db-wal").exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 10
    finally:
        conn.close()


async def test_a_cancelled_close_still_lets_the_running_checkpoint_finish_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: list[str] = []
    checkpoint = database.checkpoint_once

    def slow_checkpoint(conn: sqlite3.Connection) -> None:
        time.sleep(0.3)
        try:
            checkpoint(conn)
            outcomes.append("done")
        except sqlite3.Error as exc:  # e.g. "Cannot operate on a closed database"
            outcomes.append(f"failed: {exc}")

    monkeypatch.setattr(database, "checkpoint_once", slow_checkpoint)
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    await asyncio.sleep(database.CHECKPOINT_INTERVAL_SECONDS + 0.1)  # one is running
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.05)
    closing.cancel()  # a shutdown that is itself cut short

    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.sleep(0.5)

    assert outcomes == ["done"]
    with pytest.raises(sqlite3.ProgrammingError):  # the main connection is closed too
        await db.fetch_one("SELECT 1")


async def test_checkpoints_never_create_a_database_that_is_not_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "gone.db"

    await asyncio.wait_for(database.checkpoint_forever(str(missing)), timeout=5)

    assert not missing.exists()
    assert "background WAL checkpoints are off" in caplog.text


async def test_a_commit_that_fails_leaves_no_transaction_open(tmp_path: Path) -> None:
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            await tx.execute(
                "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
                "DEFERRABLE INITIALLY DEFERRED)"
            )
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO child (parent_id) VALUES (42)")
            # The deferred foreign key fails at COMMIT, not at the INSERT.

        assert not db.in_transaction
        assert await db.fetch_all("SELECT * FROM child") == []
        async with db.transaction() as tx:  # and the next one begins as usual
            await tx.execute("INSERT INTO parent (id) VALUES (1)")
        assert len(await db.fetch_all("SELECT * FROM parent")) == 1
    finally:
        await db.close()

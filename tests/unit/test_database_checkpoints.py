"""WAL checkpoints run in the background, off the event loop, and stop with the database."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from wallet_service.store import database
from wallet_service.store.database import Database


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


async def add_customers(db: Database, count: int) -> None:
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
    db = await Database.open(str(path))
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
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        (pages,) = await db.fetch_all("PRAGMA wal_autocheckpoint")
        assert pages[0] == database.FOREGROUND_CHECKPOINT_PAGES
    finally:
        await db.close()


async def test_closing_stops_the_checkpoints_and_leaves_no_wal(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    db = await Database.open(str(path))
    await add_customers(db, 10)

    await db.close()

    assert not [t for t in asyncio.all_tasks() if t.get_name() == "checkpoints"]
    assert not path.with_name("w.db-wal").exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 10
    finally:
        conn.close()

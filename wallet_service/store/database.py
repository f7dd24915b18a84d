"""The SQLite database: one connection in WAL mode, migrations, and transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

Row = aiosqlite.Row


def _migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every file in migrations/, in order; NNNN_name.sql."""
    found = []
    for entry in resources.files("wallet_service.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


class Database:
    """One SQLite connection; writes are serialized through ``transaction()``.

    SQLite has a single writer anyway; one connection and an asyncio lock keep
    transactions from interleaving on it. Never hold a transaction across a KasPro call.
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._conn = connection
        self._lock = asyncio.Lock()
        self._events_written = asyncio.Event()

    @property
    def events_written(self) -> asyncio.Event:
        """Set (and replaced by a fresh one) after each commit that wrote events."""
        return self._events_written

    @classmethod
    async def open(cls, path: str) -> Database:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA busy_timeout = 5000")
        db = cls(conn)
        await db.migrate()
        return db

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def migrate(self) -> None:
        """Apply every migration newer than the database's user_version."""
        async with self._lock:
            cursor = await self._conn.execute("PRAGMA user_version")
            row = await cursor.fetchone()
            current = int(row[0]) if row else 0
            for version, sql in _migrations():
                if version <= current:
                    continue
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _split(sql):
                        await self._conn.execute(statement)
                    await self._conn.execute(f"PRAGMA user_version = {version:d}")
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                log.info("applied database migration %04d", version)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._conn)
            try:
                yield tx
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")
        if tx.wrote_events:
            signal, self._events_written = self._events_written, asyncio.Event()
            signal.set()

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        async with self._lock:
            cursor = await self._conn.execute(sql, tuple(params))
            return await cursor.fetchone()

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        async with self._lock:
            cursor = await self._conn.execute(sql, tuple(params))
            return list(await cursor.fetchall())


class Transaction:
    """Statements inside one database transaction."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._conn = connection
        self.wrote_events = False

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        cursor = await self._conn.execute(sql, tuple(params))
        return cursor.rowcount

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        cursor = await self._conn.execute(sql, tuple(params))
        return await cursor.fetchone()

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        cursor = await self._conn.execute(sql, tuple(params))
        return list(await cursor.fetchall())


def _split(sql: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside our literals)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

"""The SQLite engine: one connection in WAL mode, migrations, and transactions.

Statements run on the event loop's own thread: each takes microseconds, a hop to a
worker thread costs more than the statement (docs/decisions/0007-sqlite-access.md). A
transaction's statements therefore run back to back, and it never spans a KasPro call.
The connection never waits for a lock: what another process's lock holds off is tried
again after an asynchronous pause (``retry_while_locked``), and the loop serves meanwhile.
One process uses the file (``sole_process``): transactions run one at a time, so a
transaction is never refused for a conflict and ``run`` runs its body once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from wallet_service.domain.errors import DatabaseBusy
from wallet_service.store.database import (
    Database,
    Isolation,
    Row,
    SchemaTooNew,
    Transaction,
    latest_version,
    migrations,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


# WAL checkpoints run in a worker thread on a connection of their own, so that the loop
# does not stop for them; the loop's own automatic checkpoint stays, rarer, to restart
# the WAL, which a background checkpoint cannot do while writes go on (decision 0007).
CHECKPOINT_INTERVAL_SECONDS = 0.2
FOREGROUND_CHECKPOINT_PAGES = 4000

# How long a statement waits, in all, for a lock another process holds (a backup,
# ``sqlite3`` in a shell) before DatabaseBusy.
LOCK_WAIT_SECONDS = 5.0


class SqliteDatabase(Database):
    """One SQLite connection; writes are serialized through ``transaction()``."""

    engine = "sqlite"
    sole_process = True

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(uuid.uuid4().hex)
        self._conn = connection
        self._checkpoints: asyncio.Task[None] | None = None
        # Keeps our transactions apart: one may pause at BEGIN while another process
        # holds the write lock; past BEGIN they await nothing but their own statements.
        self._lock = asyncio.Lock()

    @classmethod
    async def open_file(cls, path: str) -> SqliteDatabase:
        if path != ":memory:":
            _private_files(Path(path))
        # No busy timeout: SQLite answers SQLITE_BUSY at once (retry_while_locked).
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        conn.row_factory = sqlite3.Row
        await retry_while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted and shrunk rows (forgotten keys, reduced answers) are zeroed, not left
        # readable in freed space; not every SQLite build does it by default.
        conn.execute("PRAGMA secure_delete = ON")
        # SQLite's two-argument max() and min() under PostgreSQL's names, so that one
        # statement reads alike on both engines (no NULL argument is ever passed).
        conn.create_function("GREATEST", 2, max, deterministic=True)
        conn.create_function("LEAST", 2, min, deterministic=True)
        db = cls(conn)
        await db.migrate()
        if path != ":memory:":
            conn.execute(f"PRAGMA wal_autocheckpoint = {FOREGROUND_CHECKPOINT_PAGES:d}")
            db._checkpoints = asyncio.create_task(checkpoint_forever(path), name="checkpoints")
        return db

    async def close(self) -> None:
        try:
            if self._checkpoints is not None:
                checkpoints, self._checkpoints = self._checkpoints, None
                checkpoints.cancel()
                await asyncio.gather(checkpoints, return_exceptions=True)
        finally:
            async with self._lock:
                self._conn.close()

    async def migrate(self) -> None:
        """Apply every migration newer than the database's user_version."""
        async with self._lock:
            row: Row | None = await retry_while_locked(
                lambda: self._conn.execute("PRAGMA user_version").fetchone()
            )
            current = int(row[0]) if row else 0
            if current > latest_version(self.engine):
                raise SchemaTooNew(current, latest_version(self.engine))
            for version, sql in migrations(self.engine):
                if version <= current:
                    continue
                await retry_while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))
                try:
                    for statement in _split(sql):
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {version:d}")
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                log.info("applied database migration %04d", version)
            log.info("database schema at version %d (SQLite)", latest_version(self.engine))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception; DatabaseBusy, with
        nothing written, when another process keeps the write lock LOCK_WAIT_SECONDS."""
        asked = time.monotonic()  # the wait behind a transaction of ours counts too
        async with self._lock:
            await retry_while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"), asked)
            tx = SqliteTransaction(self._conn, self.incarnation)
            try:
                yield tx
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (disk full, I/O error, a deferred constraint)
                # may leave the transaction open: later reads would see its rows.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        self.observer.transaction_ended(time.monotonic() - asked)
        if tx.wrote_events:
            self._wake_watchers()

    async def run(
        self,
        body: Callable[[Transaction], Awaitable[T]],
        isolation: Isolation = Isolation.SERIALIZABLE,
    ) -> T:
        # One transaction at a time whatever ``isolation`` asks: each is serializable.
        async with self.transaction() as tx:
            return await body(tx)

    async def after_rewrite(self) -> None:
        # Old pages may still be in the WAL: copy it back and empty it (the connection
        # zeroes what it frees, ``secure_delete``).
        await self.fetch_one("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def in_transaction(self) -> bool:
        """True while a transaction is open: its coroutine is suspended inside it, and a
        plain read on this shared connection would see its uncommitted rows."""
        return self._conn.in_transaction

    def connections_in_use(self) -> int:
        return int(self._lock.locked())

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        args = tuple(params)
        row: Row | None = await retry_while_locked(lambda: self._conn.execute(sql, args).fetchone())
        return row

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        args = tuple(params)
        return await retry_while_locked(lambda: self._conn.execute(sql, args).fetchall())


async def retry_while_locked(run: Callable[[], T], since: float | None = None) -> T:
    """``run()``, tried again while another process holds the lock it needs, after a
    pause of 1 ms doubling to 50 ms; DatabaseBusy once LOCK_WAIT_SECONDS have passed
    ``since`` (by default, the first refusal). Only for what does nothing when refused:
    BEGIN, and reads outside a transaction. Past BEGIN IMMEDIATE the write lock is ours,
    and in WAL no statement, COMMIT included, is refused for a lock (decision 0007).
    """
    pause = 0.001
    while True:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # or an extended BUSY
                raise
            now = time.monotonic()
            since = now if since is None else since
            left = since + LOCK_WAIT_SECONDS - now
            if left <= 0:
                raise DatabaseBusy() from exc
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)


def _private_files(path: Path) -> None:
    """Only the service's user may read the database: it holds personal data
    (docs/operations.md, "Personal data at rest").

    A directory we create is 0700; one that exists is the operator's, so it is named in a
    warning rather than changed. The database file is created 0600 before SQLite opens it,
    and an existing one loses its group and other bits, as do a -wal and -shm left beside
    it; SQLite gives the -wal and -shm files it creates the database file's bits.
    """
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif stat.S_IMODE(directory.stat().st_mode) & 0o077:
        log.warning(
            "the data directory %s is open to other users: make it 0700 (docs/operations.md)",
            directory.absolute(),
        )
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
        try:
            bits = stat.S_IMODE(file.stat().st_mode)
            if bits & 0o077:
                file.chmod(bits & 0o700)
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            log.warning("cannot make %s private to the service's user: %s", file, exc)


async def checkpoint_forever(path: str) -> None:
    """Copy committed WAL pages into the database file, off the event loop.

    Its connection keeps SQLite's default ``synchronous = FULL``: the WAL is synced
    before pages are copied, the database file before they are marked copied.
    """
    loop = asyncio.get_running_loop()
    try:
        # mode=rw: a database file that vanished is an error, not a new empty file.
        conn = await asyncio.to_thread(
            sqlite3.connect,
            f"file:{quote(path)}?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        log.error("background WAL checkpoints are off (the loop's own go on): %s", exc)
        return
    warned_at = -math.inf
    try:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_SECONDS)
            work = asyncio.ensure_future(asyncio.to_thread(checkpoint_once, conn))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                # The connection is closed after the running checkpoint, never during,
                # however often the close is cancelled meanwhile.
                while not work.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([work])
                raise
            except sqlite3.Error as exc:
                if loop.time() - warned_at > 60:  # a lasting problem: once a minute
                    warned_at = loop.time()
                    log.warning("background WAL checkpoint failed: %s", exc)
    finally:
        conn.close()


def checkpoint_once(conn: sqlite3.Connection) -> None:
    # PASSIVE: never waits for readers or the writer, and they never wait for it.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


class SqliteTransaction(Transaction):
    """Statements inside one SQLite transaction, on the one connection."""

    def __init__(self, connection: sqlite3.Connection, incarnation: str) -> None:
        super().__init__(incarnation)
        self._conn = connection

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        return self._conn.execute(sql, tuple(params)).rowcount

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, tuple(params)).fetchone()
        return row

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return list(self._conn.execute(sql, tuple(params)).fetchall())

    async def lock(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        # BEGIN IMMEDIATE took the database's write lock: every row is ours already.
        return await self.fetch_one(sql, params)


def _split(sql: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside our literals)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

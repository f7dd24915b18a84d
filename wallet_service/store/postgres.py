"""The PostgreSQL engine: a pool of asyncpg connections shared by several replicas'
worth of transactions (docs/decisions/0011-postgres-driver.md).

Isolation. Every transaction made through ``run`` is SERIALIZABLE. The store functions
were written for SQLite, where transactions run one at a time: each reads what it decides
on and writes in the same transaction (a key's state before claiming it, an attempt's
status before applying an answer, an OTP's guesses before counting one more, a ride's
status before moving it). SERIALIZABLE is the level at which PostgreSQL promises that
such transactions, run side by side on several replicas, end as if they had run one at a
time — so every rule that held on SQLite holds here without locking by hand, and none
depends on a reviewer noticing which read needed ``FOR UPDATE``. What it costs is the
retry: the server may refuse one of two conflicting transactions (SQLSTATE 40001), and a
deadlock (40P01) ends one of them; ``run`` runs the refused one's body again from the
start, reading afresh. Plain reads outside ``run`` (``fetch_one``, ``fetch_all``) see what
is committed, statement by statement (READ COMMITTED): nothing is decided on them that
a later transaction does not check again.

Lost connections. A connection that dies (server restart, failover, a terminated
backend) before COMMIT was sent takes its transaction with it: ``run`` runs the body
again on another connection. One that dies while COMMIT is on its way leaves the outcome
unknown: ``run`` raises CommitUnknown and never runs the body twice; what comes next
reads the database first, like any unknown outcome.

Event numbering. Transactions on different replicas commit in any order, so a number
taken at INSERT could become visible after a larger one that a watcher has already read
past. Here an event is written without a number, and numbered only after its transaction
committed, by one numbering step at a time (an advisory lock): each step numbers, in
``id`` order, every committed row that has none, after the largest number so far, and
announces them (NOTIFY). A watcher reads numbered rows only, so the numbers it sees never
gain a row below the last one it read. The replica that wrote events numbers them right
after its commit; a sweep numbers what a replica that died in between left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

import asyncpg

from wallet_service.domain.errors import CommitUnknown, DatabaseBusy
from wallet_service.store.database import (
    Database,
    Row,
    SchemaTooNew,
    Transaction,
    latest_version,
    migrations,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long ``run`` and plain reads keep trying (conflicts, a lost server) before
# DatabaseBusy: a failover of a managed PostgreSQL takes some seconds to tens of
# seconds; a caller's deadline usually ends the wait first.
RETRY_SECONDS = 10.0
# Advisory lock keys (any two 64-bit numbers of our own): one replica migrates at a time,
# one numbering step runs at a time.
MIGRATION_LOCK = 0x57A11E7_0001
NUMBERING_LOCK = 0x57A11E7_0002
EVENTS_CHANNEL = "wallet_events"
# How often unnumbered events (of a replica that died after its commit) are looked for,
# and how often the listening connection is checked and watchers woken at the latest.
SWEEP_SECONDS = 1.0

# The server refused the transaction for a conflict: run it again.
_CONFLICTS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# The connection or the server went away (or would not take one more connection).
_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@functools.lru_cache(maxsize=4096)
def dialect(sql: str) -> str:
    """A statement of the store as PostgreSQL takes it: ``?`` placeholders numbered
    ``$1``, ``$2``… (no store statement has a ``?`` inside a literal)."""
    counter = iter(range(1, 1 << 16))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def _changed(status: str) -> int:
    """Rows changed, from a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTransaction(Transaction):
    def __init__(self, connection: asyncpg.Connection, incarnation: str) -> None:
        super().__init__(incarnation)
        self._conn = connection

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        return _changed(await self._conn.execute(dialect(sql), *params))

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        return cast(Row | None, await self._conn.fetchrow(dialect(sql), *params))

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return cast(list[Row], await self._conn.fetch(dialect(sql), *params))


class PostgresDatabase(Database):
    engine = "postgresql"
    sole_process = False

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        super().__init__(uuid.uuid4().hex)
        self._url = url
        self._pool = pool
        self._listener: asyncpg.Connection | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, *, pool_size: int) -> PostgresDatabase:
        pool = await _create_pool(url, pool_size)
        db = cls(url, pool)
        try:
            await db.migrate()
            await db._listen()
        except BaseException:
            await pool.close()
            raise
        db._sweeper = asyncio.create_task(db._sweep_forever(), name="event-numbering")
        return db

    async def close(self) -> None:
        if self._sweeper is not None:
            sweeper, self._sweeper = self._sweeper, None
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(*_LOST):
                await self._listener.close(timeout=2)
            self._listener = None
        await self._pool.close()

    async def migrate(self) -> None:
        """Apply every migration newer than the database's version, once, whichever
        replica comes first: the others wait on the advisory lock, then find nothing
        left to do. A schema newer than this release is refused."""
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"
                )
                current = await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0
                known = latest_version(self.engine)
                if current > known:
                    raise SchemaTooNew(current, known)
                for version, sql in migrations(self.engine):
                    if version <= current:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("DELETE FROM schema_version")
                        await conn.execute(
                            "INSERT INTO schema_version (version) VALUES ($1)", version
                        )
                    log.info("applied database migration %04d", version)
                log.info("database schema at version %d (PostgreSQL)", known)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def run(self, body: Callable[[Transaction], Awaitable[T]]) -> T:
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                result, wrote_events = await self._run_once(body)
            except _CONFLICTS as exc:
                await _pause(started, tries, exc, "refused for a conflict")
                continue
            except _LOST as exc:
                await _pause(started, tries, exc, "lost its connection")
                continue
            if wrote_events:
                await self.number_events()
            return result

    async def _run_once(self, body: Callable[[Transaction], Awaitable[T]]) -> tuple[T, bool]:
        async with self._pool.acquire() as conn:
            tx = PostgresTransaction(conn, self.incarnation)
            transaction = conn.transaction(isolation="serializable")
            await transaction.start()
            try:
                result = await body(tx)
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(*_LOST):
                        await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except _CONFLICTS:
                raise  # refused at COMMIT: nothing was written, the body runs again
            except _LOST as exc:
                raise CommitUnknown() from exc
            return result, tx.wrote_events

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        args = tuple(params)
        return cast(Row | None, await self._read(lambda c: c.fetchrow(dialect(sql), *args)))

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        args = tuple(params)
        return cast(list[Row], await self._read(lambda c: c.fetch(dialect(sql), *args)))

    async def _read(self, query: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        """A read outside a transaction, tried again on a new connection when its own is
        lost (a read changes nothing, so trying it twice is harmless)."""
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                async with self._pool.acquire() as conn:
                    return await query(conn)
            except _LOST as exc:
                await _pause(started, tries, exc, "lost its connection")

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(2):
                async with self._pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except (*_LOST, asyncpg.PostgresError):
            return False
        return True

    async def after_rewrite(self) -> None:
        # Old row versions stay in the table's pages until VACUUM reuses them; the
        # operator's routine VACUUM (docs/operations.md) is what clears them.
        return None

    async def number_events(self) -> int:
        """Number every committed event that has none, in the order they were written;
        return how many. One step at a time across all replicas (an advisory lock held
        to its commit), so numbers become visible in increasing order."""
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", NUMBERING_LOCK)
                    # READ COMMITTED: this statement's snapshot is taken after the lock
                    # was granted, so it sees the previous step's numbers.
                    numbered = _changed(
                        await conn.execute(
                            """UPDATE events SET sequence = numbered.sequence
                               FROM (SELECT id, (SELECT COALESCE(MAX(sequence), 0) FROM events)
                                                + ROW_NUMBER() OVER (ORDER BY id) AS sequence
                                     FROM events WHERE sequence IS NULL) AS numbered
                               WHERE events.id = numbered.id"""
                        )
                    )
                    if numbered:
                        await conn.execute(f"NOTIFY {EVENTS_CHANNEL}")
                break
            except _LOST as exc:
                await _pause(started, tries, exc, "lost its connection while numbering events")
        if numbered:
            self._wake_watchers()
        return numbered

    async def _listen(self) -> None:
        """One connection of its own, outside the pool, that hears every replica's
        NOTIFY and wakes this process's watchers."""
        listener = await asyncpg.connect(self._url)
        await listener.add_listener(EVENTS_CHANNEL, lambda *_: self._wake_watchers())
        self._listener = listener

    async def _sweep_forever(self) -> None:
        """Number what a replica that died after its commit left unnumbered; keep the
        listening connection alive (watchers are woken after each reconnection, so that
        what was announced while it was down is read)."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                    self._wake_watchers()
                if await self.fetch_one("SELECT 1 FROM events WHERE sequence IS NULL LIMIT 1"):
                    await self.number_events()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next sweep tries again
                log.warning("event numbering sweep failed: %s", exc)
                self._wake_watchers()


async def _create_pool(url: str, size: int) -> asyncpg.Pool:
    started = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            return await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=size,
                server_settings={"application_name": "wallet-service"},
            )
        except _LOST as exc:
            await _pause(started, tries, exc, "cannot connect")


async def _pause(started: float, tries: int, exc: BaseException, what: str) -> None:
    """Wait before the next try (2 ms doubling to 500 ms, half of it random so that
    conflicting replicas do not meet again), or give up with DatabaseBusy once
    RETRY_SECONDS have passed since the first."""
    elapsed = time.monotonic() - started
    if elapsed >= RETRY_SECONDS:
        raise DatabaseBusy(
            f"the wallet database {what} for {elapsed:.1f} s: retry shortly"
        ) from exc
    if tries == 1 or tries % 20 == 0:
        log.info("database transaction %s (try %d): %s", what, tries, exc)
    ceiling = min(0.002 * 2 ** min(tries, 10), 0.5)
    await asyncio.sleep(ceiling / 2 + random.uniform(0, ceiling / 2))

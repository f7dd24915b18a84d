"""The PostgreSQL engine: a pool of asyncpg connections shared by several replicas'
worth of transactions (docs/decisions/0011-postgres-driver.md).

Isolation. A transaction made through ``run`` is SERIALIZABLE unless it asks otherwise.
The store functions were written for SQLite, where transactions run one at a time: each
reads what it decides on and writes in the same transaction (a key's state before
claiming it, an OTP's guesses before counting one more, a ride's status before moving
it). SERIALIZABLE is the level at which PostgreSQL promises that such transactions, run
side by side on several replicas, end as if they had run one at a time, without locking
by hand. What it costs is the retry: the server may refuse one of two conflicting
transactions (SQLSTATE 40001) — also for a false conflict, its predicate locks covering
whole index pages — and a deadlock (40P01) ends one of them; ``run`` runs the refused
one's body again from the start, reading afresh. The busiest transaction, applying
KasPro's answer to an operation, asks for READ COMMITTED behind a lock of the operation's
row instead (``Isolation``, ``Transaction.lock``): measured, it drew most of the false
conflicts (docs/performance.md). Plain reads outside ``run`` (``fetch_one``,
``fetch_all``) see what is committed, statement by statement (READ COMMITTED): nothing is
decided on them that a later transaction does not check again.

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
gain a row below the last one it read. The replica that wrote events asks its numbering
task to run once the transaction committed — the caller does not wait for it: its
transaction is written, whatever happens to the numbering — and that task runs one step
for all the commits that asked meanwhile. A sweep every second numbers what a replica
that died in between left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

import asyncpg

from wallet_service.domain.errors import CommitUnknown, DatabaseBusy
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
# the listening connection is asked whether the server answers, and watchers woken at
# the latest.
SWEEP_SECONDS = 1.0
# The server is taken for unreachable when the listening connection has not answered for
# this long (health: NOT_SERVING).
UNANSWERED_SECONDS = 5.0
# A statement that has had no answer for this long is taken for a lost connection (a
# failover that silently drops packets would otherwise hang it for the kernel's TCP
# timeout, about 15 minutes). Our statements take milliseconds; migrations have no limit.
STATEMENT_TIMEOUT_SECONDS = 10.0
# A numbering step waits this long for the lock of a step running elsewhere before it
# gives up and tries again later (a replica paused while it held the lock).
NUMBERING_LOCK_TIMEOUT = "2s"
# Every session of ours: the server ends a transaction of ours left open this long (a
# replica paused or cut off mid-transaction keeps no lock for longer), and notices a
# client that is gone within about 20 s instead of the system's two hours.
SESSION_SETTINGS = {
    "application_name": "wallet-service",
    "idle_in_transaction_session_timeout": "30s",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "2",
}

# The server refused the transaction for a conflict: run it again.
_CONFLICTS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# A unique key taken by a transaction that committed meanwhile: the body decided on a
# read that no longer holds (it found no ride, and another request's ride with the same
# key committed before its insert). PostgreSQL reports it as 23505, not 40001, when the
# body did not read that very key, and its manual advises retrying it ("Serialization
# Failure Handling"). The body runs again and reads the winner's row. Only a few times:
# a body that collides with its own rows is a bug, raised as it is.
UNIQUE_RETRIES = 3
# The connection or the server went away (or would not take one more connection). An
# asyncpg.InterfaceError is one only when its connection is closed (``_is_lost``): else
# it is a mistake of ours (a wrong argument count), raised as it is.
_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    # asyncpg's protocol state broken: a backend terminated while a statement was on its
    # way ("cannot switch to state 15; another operation is in progress") raises it
    # before the connection looks closed (MagicStack/asyncpg#1069).
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class _ConnectionLost(Exception):
    """The connection under a statement was lost (wraps what asyncpg raised)."""


def _closed(conn: asyncpg.Connection) -> bool:
    """Whether the connection is gone; the pool detaches a lost one from its proxy, which
    then refuses every call, this one too."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


def _is_lost(exc: BaseException, conn: asyncpg.Connection) -> bool:
    """Whether ``exc`` says the connection is gone; such a connection is terminated here,
    never handed out again."""
    lost = isinstance(exc, _LOST) or (isinstance(exc, asyncpg.InterfaceError) and _closed(conn))
    if lost:
        with contextlib.suppress(Exception):
            conn.terminate()
    return lost


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

    async def lock(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        return await self.fetch_one(f"{sql} FOR UPDATE", params)


class PostgresDatabase(Database):
    engine = "postgresql"
    sole_process = False

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        super().__init__(uuid.uuid4().hex)
        self._url = url
        self._pool = pool
        self._listener: asyncpg.Connection | None = None
        self._answered_at = time.monotonic()
        self._numbering_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

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
        db._tasks = [
            asyncio.create_task(db._number_when_asked(), name="event-numbering"),
            asyncio.create_task(db._sweep_forever(), name="database-sweep"),
        ]
        return db

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._numbering_wanted.is_set():
            # Number what the last commits wrote now rather than leave it to another
            # replica's sweep (or this one's next start).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.number_events()
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
            # However long another replica's migration takes (no statement timeout).
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK, timeout=24 * 3600)
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
                    async with conn.transaction(isolation="read_committed"):
                        await conn.execute(sql, timeout=24 * 3600)
                        await conn.execute("DELETE FROM schema_version")
                        await conn.execute(
                            "INSERT INTO schema_version (version) VALUES ($1)", version
                        )
                    log.info("applied database migration %04d", version)
                log.info("database schema at version %d (PostgreSQL)", known)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def run(
        self,
        body: Callable[[Transaction], Awaitable[T]],
        isolation: Isolation = Isolation.SERIALIZABLE,
    ) -> T:
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                result, wrote_events = await self._run_once(body, isolation)
            except _CONFLICTS as exc:
                await _pause(started, tries, exc, "refused for a conflict")
                self.observer.retried("conflict")
                continue
            except asyncpg.UniqueViolationError as exc:
                if tries > UNIQUE_RETRIES:
                    raise
                await _pause(started, tries, exc, "met a key another transaction took")
                self.observer.retried("unique_key")
                continue
            except _ConnectionLost as exc:
                await _pause(started, tries, exc.__cause__ or exc, "lost its connection")
                self.observer.retried("connection_lost")
                continue
            self.observer.transaction_ended(time.monotonic() - started)
            if wrote_events:
                self._numbering_wanted.set()  # numbered by the numbering task, not here
            return result

    async def _run_once(
        self, body: Callable[[Transaction], Awaitable[T]], isolation: Isolation
    ) -> tuple[T, bool]:
        try:
            async with self._pool.acquire() as conn:
                try:
                    return await self._transaction(conn, body, isolation)
                except (*_CONFLICTS, CommitUnknown):
                    raise
                except Exception as exc:
                    if _is_lost(exc, conn):  # before COMMIT: nothing was written
                        raise _ConnectionLost() from exc
                    raise
        except _LOST as exc:  # no connection to be had (the server away)
            raise _ConnectionLost() from exc

    async def _transaction(
        self,
        conn: asyncpg.Connection,
        body: Callable[[Transaction], Awaitable[T]],
        isolation: Isolation,
    ) -> tuple[T, bool]:
        tx = PostgresTransaction(conn, self.incarnation)
        transaction = conn.transaction(isolation=isolation.value)
        await transaction.start()
        try:
            result = await body(tx)
        except BaseException:
            if not _closed(conn):
                with contextlib.suppress(*_LOST, asyncpg.InterfaceError):
                    await transaction.rollback()
            raise
        try:
            await transaction.commit()
        except _CONFLICTS:
            raise  # refused at COMMIT: nothing was written, the body runs again
        except Exception as exc:
            if _is_lost(exc, conn):
                raise CommitUnknown() from exc
            raise
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
                    try:
                        return await query(conn)
                    except Exception as exc:
                        if not _is_lost(exc, conn):
                            raise
                        lost: BaseException = exc
            except _LOST as exc:  # no connection to be had (the server away)
                lost = exc
            await _pause(started, tries, lost, "lost its connection")

    def connections_in_use(self) -> int:
        return int(self._pool.get_size() - self._pool.get_idle_size())

    async def healthy(self) -> bool:
        """Whether the server answered the listening connection lately (asked every
        second, apart from the pool: a pool busy with load is not a server away)."""
        return time.monotonic() - self._answered_at < UNANSWERED_SECONDS

    async def after_rewrite(self) -> None:
        # Old row versions stay in the table's pages until VACUUM reuses them; the
        # operator's routine VACUUM (docs/operations.md) is what clears them.
        return None

    async def number_events(self) -> int:
        """Number every committed event that has none, in the order they were written;
        return how many. One step at a time across all replicas (an advisory lock held
        to its commit), so numbers become visible in increasing order. READ COMMITTED,
        whatever the server's default: the UPDATE's snapshot, taken once the lock is
        granted, must see the previous step's numbers."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="read_committed"):
            await conn.execute(f"SET LOCAL lock_timeout = '{NUMBERING_LOCK_TIMEOUT}'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", NUMBERING_LOCK)
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
        if numbered:
            self._wake_watchers()
        return numbered

    async def _number_when_asked(self) -> None:
        """Run a numbering step whenever a commit of this process wrote events; one step
        serves every commit that asked while the previous one ran. A step that fails
        (the server away, the lock held elsewhere too long) is tried again shortly."""
        pause = 0.05
        while True:
            await self._numbering_wanted.wait()
            self._numbering_wanted.clear()
            try:
                await self.number_events()
                pause = 0.05
            except asyncio.CancelledError:
                self._numbering_wanted.set()  # cut off mid-step: ``close`` numbers them
                raise
            except Exception as exc:
                log.warning("numbering events failed, trying again: %s", exc)
                self._numbering_wanted.set()
                await asyncio.sleep(pause)
                pause = min(pause * 2, SWEEP_SECONDS)

    async def _listen(self) -> None:
        """One connection of its own, outside the pool, that hears every replica's
        NOTIFY and wakes this process's watchers."""
        listener = await asyncpg.connect(
            self._url, server_settings=SESSION_SETTINGS, command_timeout=STATEMENT_TIMEOUT_SECONDS
        )
        await listener.add_listener(EVENTS_CHANNEL, lambda *_: self._wake_watchers())
        self._listener = listener
        self._answered_at = time.monotonic()

    async def _sweep_forever(self) -> None:
        """Every second: ask the server through the listening connection whether it
        answers (health), reconnect that connection when it does not — and then wake the
        watchers, so that what was announced while it was down is read — and have what a
        replica that died after its commit left unnumbered numbered."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                    self._wake_watchers()
                async with asyncio.timeout(UNANSWERED_SECONDS / 2):
                    await self._listener.fetchval("SELECT 1")  # type: ignore[union-attr]
                self._answered_at = time.monotonic()
                if await self.fetch_one("SELECT 1 FROM events WHERE sequence IS NULL LIMIT 1"):
                    self._numbering_wanted.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server is away: the next sweep tries again
                log.warning("database sweep failed: %s", exc)
                if self._listener is not None and not self._listener.is_closed():
                    self._listener.terminate()
                self._wake_watchers()


_INT8 = struct.Struct("!q")


def _encode_int8(value: object) -> bytes:
    """A BIGINT parameter (amounts, counts) from an int only: asyncpg's own codec would
    truncate a float (1.5 becomes 1) or take a bool, and a wrong type must fail the
    statement, never store another amount (docs/decisions/0011)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"a BIGINT takes an int, not {type(value).__name__}")
    return _INT8.pack(value)


def _decode_int8(data: bytes) -> int:
    number: int = _INT8.unpack(data)[0]
    return number


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "int8",
        schema="pg_catalog",
        encoder=_encode_int8,
        decoder=_decode_int8,
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection keeps its session as it is: the store leaves no session
    state behind (no SET, no LISTEN, no session advisory lock past ``migrate``), and
    asyncpg still rolls back a transaction left open. It saves the reset query's round
    trip on every release (docs/decisions/0011)."""


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
                server_settings=SESSION_SETTINGS,
                command_timeout=STATEMENT_TIMEOUT_SECONDS,
                init=_prepare_connection,
                reset=_keep_session,
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

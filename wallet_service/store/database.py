"""The database, on either engine: what the store functions see of it.

Two engines implement it: SQLite (``store/sqlite.py``; one file, one process, the
embedded default) and PostgreSQL (``store/postgres.py``; several replicas on one
server). The store functions are written once, for both: their SQL uses ``?``
placeholders and the subset both engines read alike (docs/operations.md, "Two engines").
Where an engine must differ, the difference lives in its module, behind this interface:

- ``run(body)``: one transaction around ``body``. SQLite runs its transactions one at a
  time (BEGIN IMMEDIATE). PostgreSQL runs them side by side at SERIALIZABLE (or, asked
  for, READ COMMITTED behind a row lock: ``Isolation``), and runs the body again when the
  server refuses it for a conflict: a body does database work only.
- ``Transaction.lock(sql)``: a SELECT whose rows stay locked against other lockers and
  writers until the transaction ends (``FOR UPDATE`` on PostgreSQL; on SQLite the write
  lock BEGIN IMMEDIATE took already covers every row).
- ``events_written``: woken after events were written — by this process on SQLite, by
  any replica on PostgreSQL (LISTEN/NOTIFY).
- ``sole_process``: whether this process is the only one using the database (SQLite), so
  that a row claimed by another incarnation belongs to a process that is gone.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import fields
from importlib import resources
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Isolation(enum.Enum):
    """How a transaction is kept apart from the others running beside it (PostgreSQL;
    SQLite's run one at a time). docs/money.md, "Isolation on PostgreSQL", says which
    transaction needs which."""

    # As if the transactions had run one after the other: a body may decide on anything
    # it read. The server refuses one of two that conflict, and the body runs again.
    SERIALIZABLE = "serializable"
    # One snapshot for the whole body, and no predicate locks: for a body that only needs
    # its reads consistent with each other and writes nothing it decided on from rows
    # others write, beyond compare-and-sets and unique keys (the drift check). Refused
    # when a row it updates changed since its snapshot (40001), and run again.
    SNAPSHOT = "repeatable_read"
    # Each statement sees what is committed when it starts. Only for a body whose first
    # statement is a ``Transaction.lock`` of the one row that every writer of what it
    # decides on locks first: the lock makes those writers take turns, and past it every
    # statement sees the turn before. Refused only for a deadlock.
    READ_COMMITTED = "read_committed"


class Row(Protocol):
    """A result row, read by column name or position (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer version of the service than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database's schema is version {found}, newer than this release knows "
            f"({known}): a newer wallet-service migrated it. Run that release (or newer); "
            "an older one could misread what the newer one wrote (docs/operations.md, "
            '"Database").'
        )


def migrations(engine: str) -> list[tuple[int, str]]:
    """(version, SQL) of every file in migrations/<engine>/, in order; NNNN_name.sql.

    Each engine has its own folder: SQLite's holds every step since the first version,
    PostgreSQL's begins at the schema of version 8 (it was added then) and follows
    SQLite's numbering from there, one file per version in both folders."""
    found = []
    folder = resources.files("wallet_service.store").joinpath("migrations", engine)
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def latest_version(engine: str) -> int:
    return migrations(engine)[-1][0]


class Transaction(abc.ABC):
    """Statements inside one database transaction."""

    def __init__(self, incarnation: str) -> None:
        self.incarnation = incarnation
        self.wrote_events = False

    @abc.abstractmethod
    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    @abc.abstractmethod
    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None: ...

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    @abc.abstractmethod
    async def lock(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """``fetch_one`` of a SELECT whose rows stay locked until the transaction ends:
        another transaction locking or writing them waits for this one's end."""


class Observer:
    """What a database tells of its transactions; nobody listens until the service's
    metrics replace it (``Metrics.watch_database``)."""

    def transaction_ended(self, seconds: float) -> None:
        """A transaction committed ``seconds`` after it was asked for, waits and retries
        included (one that failed is the caller's error, and its log's)."""

    def retried(self, cause: str) -> None:
        """A transaction body runs again, for ``cause`` (store/postgres.py)."""


class Database(abc.ABC):
    """One engine's database; ``Database.open`` picks the engine from its target."""

    engine: str
    sole_process: bool

    def __init__(self, incarnation: str) -> None:
        # This opening of the database: rows a request or worker claims name it.
        self.incarnation = incarnation
        self._events_written = asyncio.Event()
        self.observer = Observer()

    @staticmethod
    async def open(target: str, *, pool_size: int = 10) -> Database:
        """A ``postgresql://`` URL opens PostgreSQL (``pool_size`` connections at most);
        anything else is a SQLite file. Both are migrated before this returns."""
        if target.startswith(("postgresql://", "postgres://")):
            from wallet_service.store.postgres import PostgresDatabase

            return await PostgresDatabase.connect(target, pool_size=pool_size)
        from wallet_service.store.sqlite import SqliteDatabase

        return await SqliteDatabase.open_file(target)

    @property
    def events_written(self) -> asyncio.Event:
        """Set (and replaced by a fresh one) after events were written."""
        return self._events_written

    def _wake_watchers(self) -> None:
        signal, self._events_written = self._events_written, asyncio.Event()
        signal.set()

    @abc.abstractmethod
    async def run(
        self,
        body: Callable[[Transaction], Awaitable[T]],
        isolation: Isolation = Isolation.SERIALIZABLE,
    ) -> T:
        """``body`` in one transaction, its result returned. The way every write is made.

        On an engine where a transaction may be refused for a conflict (PostgreSQL's
        serialization failures and deadlocks) the whole body runs again, so a body does
        nothing but database work (no KasPro call, no change outside the database) and
        reads what it decides on inside the transaction. DatabaseBusy when the database
        cannot take it in time; CommitUnknown when the commit's outcome is unknown."""

    @abc.abstractmethod
    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None: ...

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    def in_transaction(self) -> bool:
        """True while a transaction of this process is open on a connection that plain
        reads share (SQLite's one connection): such a read would see its uncommitted rows."""
        return False

    async def healthy(self) -> bool:
        """Whether the database answers now (health checks)."""
        return True

    @abc.abstractmethod
    def connections_in_use(self) -> int:
        """Connections of this process busy with a statement or transaction now."""

    @abc.abstractmethod
    async def after_rewrite(self) -> None:
        """After rows were rewritten to forget what they held: make the old bytes leave
        the engine's files where the engine lets us."""


# Reads work inside a transaction or on their own.
Source = Database | Transaction


def columns(record: type[Any]) -> str:
    """The columns of a record's table: its dataclass fields, by the same names."""
    return ", ".join(f.name for f in fields(record))


async def insert(tx: Transaction, table: str, record: Any) -> None:
    """Insert a record as a row of ``table``: an enum as its value, a dict as JSON text."""
    values = [getattr(record, f.name) for f in fields(record)]
    await tx.execute(
        f"INSERT INTO {table} ({columns(type(record))}) VALUES ({', '.join('?' * len(values))})",
        [
            v.value if isinstance(v, enum.Enum) else json.dumps(v) if isinstance(v, dict) else v
            for v in values
        ],
    )


async def move(
    tx: Transaction,
    table: str,
    where: tuple[str, str],
    to: enum.Enum,
    sources: Iterable[enum.Enum],
    now: float,
    fields: dict[str, Any],
    returning: str,
) -> Row | None:
    """Set a row's status to ``to`` (and ``fields``) only from one of ``sources``: a
    status moves along the state machine's edges or not at all. ``where`` is
    (key column, key); the moved row's ``returning`` columns, or None when it did not
    move."""
    allowed = [s.value for s in sources]
    assignments = "".join(f", {name} = ?" for name in fields)
    return await tx.fetch_one(
        f"UPDATE {table} SET status = ?, update_time = ?{assignments} "
        f"WHERE {where[0]} = ? AND status IN ({', '.join('?' * len(allowed))}) "
        f"RETURNING {returning}",
        (to.value, now, *fields.values(), where[1], *allowed),
    )

"""The service's database as the harness sees it: SQLite (one file, one replica) or a
PostgreSQL database of its own per run (several replicas). The auditor reads the same
tables with the same queries from either; only how a consistent picture is taken differs.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg

Row = dict[str, Any]

# What the auditor reads: the whole of each table. Rows come back in no particular order
# (the auditor sorts the events itself: on PostgreSQL a committed event may not be
# numbered yet, and its place is then its ``id``).
TABLES = (
    "transactions",
    "attempts",
    "ride_payments",
    "ledger_lines",
    "events",
    "idempotency_keys",
    "callbacks",
)
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Store(Protocol):
    """Where the replicas keep their books."""

    engine: str

    def env(self) -> dict[str, str]:
        """The service's settings that point it at this database."""

    async def tables(self) -> dict[str, list[Row]]:
        """Every table the auditor reads, from one consistent picture of the database."""

    async def crash_tables(self) -> dict[str, list[Row]]:
        """The same, taken the instant a replica was killed (before it is restarted)."""

    async def count(self, sql: str) -> int:
        """The first column of a one-row query (the settle step's questions)."""


def _rows(connection: sqlite3.Connection) -> dict[str, list[Row]]:
    return {
        table: [dict(row) for row in connection.execute(f"SELECT * FROM {table}")]
        for table in TABLES
    }


class SqliteStore:
    """One SQLite file, kept across every kill of the one replica."""

    engine = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def env(self) -> dict[str, str]:
        return {"WALLET_DB_PATH": str(self.path)}

    @contextmanager
    def _readonly(self) -> Iterator[sqlite3.Connection]:
        """The service's database, opened read-only (the auditor never writes)."""
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        connection.row_factory = sqlite3.Row
        try:
            yield connection
        finally:
            connection.close()

    async def tables(self) -> dict[str, list[Row]]:
        return await asyncio.to_thread(self._tables)

    async def crash_tables(self) -> dict[str, list[Row]]:
        return await asyncio.to_thread(self._crash_tables)

    async def count(self, sql: str) -> int:
        return await asyncio.to_thread(self._count, sql)

    def _tables(self) -> dict[str, list[Row]]:
        with self._readonly() as connection:
            return _rows(connection)

    def _crash_tables(self) -> dict[str, list[Row]]:
        """The database as the killed service left it: a copy with its WAL, so opening
        it cannot disturb the file the next process uses."""
        with tempfile.TemporaryDirectory(prefix="chaos-crash-") as tmp:
            for suffix in ("", "-wal"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    shutil.copyfile(source, Path(tmp) / f"wallet.db{suffix}")
            connection = sqlite3.connect(Path(tmp) / "wallet.db")
            connection.row_factory = sqlite3.Row
            try:
                return _rows(connection)
            finally:
                connection.close()

    def _count(self, sql: str) -> int:
        with self._readonly() as connection:
            return int(connection.execute(sql).fetchone()[0])


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` (any database on the server) with its database replaced by ``name``."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class PostgresStore:
    """A database created for the run on the server named by ``admin_url``, dropped at
    the end unless kept."""

    engine = "postgres"

    def __init__(self, admin_url: str, prefix: str, seed: int) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", prefix):
            raise ValueError(f"database prefix {prefix!r}: lower-case letters, digits, _")
        self.admin_url = admin_url
        self.name = f"{prefix}_{seed}_{secrets.token_hex(4)}"
        self.url = database_url(admin_url, self.name)
        self.port = urlsplit(admin_url).port or 5432

    def env(self) -> dict[str, str]:
        return {"WALLET_DB_URL": self.url}

    async def create(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()

    async def drop(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def tables(self) -> dict[str, list[Row]]:
        # SERIALIZABLE READ ONLY DEFERRABLE: a snapshot that no set of the replicas'
        # SERIALIZABLE transactions can make inconsistent (a plain REPEATABLE READ
        # snapshot may show a state no serial order of them ever had).
        connection = await asyncpg.connect(self.url)
        try:
            async with connection.transaction(
                isolation="serializable", readonly=True, deferrable=True
            ):
                return {
                    table: [dict(r) for r in await connection.fetch(f"SELECT * FROM {table}")]
                    for table in TABLES
                }
        finally:
            await connection.close()

    async def crash_tables(self) -> dict[str, list[Row]]:
        # The other replicas go on writing: what must hold at the instant of a kill is
        # what any committed picture of the database shows.
        return await self.tables()

    async def count(self, sql: str) -> int:
        connection = await asyncpg.connect(self.url)
        try:
            return int(await connection.fetchval(sql))
        finally:
            await connection.close()

    async def terminate(self, pid: int) -> dict[str, int]:
        """End every server backend of the process ``pid`` on this database
        (``pg_terminate_backend``): its pool's connections and its listening one. The
        replicas are told apart by their connections' client ports, read from the
        process' sockets. How many were ended, by application_name."""
        ports = client_ports(pid, self.port)
        if not ports:
            return {}
        admin = await asyncpg.connect(self.admin_url)
        try:
            rows = await admin.fetch(
                "SELECT application_name, pg_terminate_backend(pid) AS ended"
                " FROM pg_stat_activity WHERE datname = $1 AND client_port = ANY($2::int[])",
                self.name,
                sorted(ports),
            )
        finally:
            await admin.close()
        ended: dict[str, int] = {}
        for row in rows:
            if row["ended"]:
                name = row["application_name"] or "(none)"
                ended[name] = ended.get(name, 0) + 1
        return ended


def client_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of the TCP connections that process ``pid`` holds to ``server_port``
    (its sockets in /proc/<pid>/fd, matched by inode with /proc/<pid>/net/tcp{,6})."""
    inodes = set()
    fds = Path(f"/proc/{pid}/fd")
    if not fds.exists():
        return set()  # the process is gone
    for fd in fds.iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports

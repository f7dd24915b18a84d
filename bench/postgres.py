"""PostgreSQL for ``make bench STORE=postgres``: a fresh database per run on the server
named by WALLET_BENCH_POSTGRES_URL, and what that server counts of a run's work.

What is counted, per database (docs/performance.md, "PostgreSQL and several replicas"):

- transactions: ``pg_stat_database``'s ``xact_commit`` and ``xact_rollback``. A statement
  outside BEGIN … COMMIT (a plain read) is a transaction of its own there. A backend
  reports its counts about once a second while busy and when it exits, so the figures
  after a run are read once the service's connections are closed.
- statements: from ``pg_stat_statements`` when the server loaded it
  (``shared_preload_libraries``); otherwise not counted (None).
- event numbering (``store/postgres.py``, ``number_events``): each step looks for
  unnumbered rows through the ``events_unnumbered`` index, which only it and the
  once-a-second sweep of each replica read: its ``idx_scan`` counts the steps. A step
  that finds rows also reads the largest number so far through the ``sequence`` index,
  which nothing else reads unless a watcher runs (the ``watch`` scenario, where the
  batches are not counted): its ``idx_scan`` counts the batches numbered; the rows
  numbered are the table's updated rows.
- the CPU time of the database's server processes (its backends), from ``/proc`` when
  the server runs on this machine; the server's shared processes (WAL writer,
  checkpointer, autovacuum) serve every database and are left out.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench import procs

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_TICKS = os.sysconf("SC_CLK_TCK")
# A database is named after the checkout's folder, so that two checkouts sharing one
# server never meet (the replica tests do the same).
_CHECKOUT = re.sub(r"[^a-z0-9]+", "_", procs.ROOT.name.lower()).strip("_")[:30] or "wallet"
PREFIX = f"{_CHECKOUT}_bench"


def admin_url() -> str:
    return os.environ.get("WALLET_BENCH_POSTGRES_URL", "").strip() or DEFAULT_URL


def database_url(admin: str, name: str) -> str:
    return urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database(admin: str) -> Iterator[tuple[str, str]]:
    """(name, URL) of a new, empty database, dropped (its connections ended) after."""
    name = f"{PREFIX}_{uuid.uuid4().hex[:12]}"
    _run(_execute(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield name, database_url(admin, name)
    finally:
        _run(_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass(frozen=True)
class Counts:
    commits: int
    rollbacks: int
    statements: int | None
    numbering_steps: int
    numbering_batches: int
    events_numbered: int
    # Per table: sequential scans, index scans, rows inserted, updated, deleted.
    tables: dict[str, tuple[int, int, int, int, int]]


class Server:
    """The bench's view of one database on the server: its counters and its backends."""

    def __init__(self, admin: str, name: str) -> None:
        self.admin = admin
        self.name = name
        self.url = database_url(admin, name)
        self.local = urlsplit(admin).hostname in (None, "", "localhost", "127.0.0.1", "::1")
        self.statements_counted = _run(self._enable_statements())

    async def _enable_statements(self) -> bool:
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.fetchval("SELECT count(*) FROM pg_stat_statements")
        except asyncpg.PostgresError:
            return False  # not loaded by the server (shared_preload_libraries)
        finally:
            await conn.close()
        return True

    def counts(self) -> Counts:
        result: Counts = _run(self._counts())
        return result

    async def _counts(self) -> Counts:
        admin = await asyncpg.connect(self.admin, timeout=10)
        try:
            row = await admin.fetchrow(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
                self.name,
            )
        finally:
            await admin.close()
        own = await asyncpg.connect(self.url, timeout=10)
        try:
            scans = {
                r["indexrelname"]: r["idx_scan"]
                for r in await own.fetch(
                    "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                    "WHERE relname = 'events'"
                )
            }
            tables = {
                r["relname"]: (
                    r["seq_scan"],
                    r["idx_scan"] or 0,
                    r["n_tup_ins"],
                    r["n_tup_upd"],
                    r["n_tup_del"],
                )
                for r in await own.fetch(
                    "SELECT relname, seq_scan, idx_scan, n_tup_ins, n_tup_upd, n_tup_del "
                    "FROM pg_stat_user_tables"
                )
            }
            statements = None
            if self.statements_counted:
                statements = await own.fetchval(
                    "SELECT COALESCE(SUM(calls), 0) FROM pg_stat_statements s "
                    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                    self.name,
                )
        finally:
            await own.close()
        return Counts(
            commits=row["xact_commit"],
            rollbacks=row["xact_rollback"],
            statements=None if statements is None else int(statements),
            numbering_steps=int(scans.get("events_unnumbered", 0)),
            numbering_batches=int(scans.get("events_sequence_key", 0)),
            events_numbered=tables.get("events", (0, 0, 0, 0, 0))[3],
            tables=tables,
        )

    def backends(self) -> list[int]:
        """Process ids of the server's backends connected to this database."""
        pids: list[int] = _run(self._backends())
        return pids

    async def _backends(self) -> list[int]:
        admin = await asyncpg.connect(self.admin, timeout=10)
        try:
            rows = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.name,
            )
        finally:
            await admin.close()
        return [r["pid"] for r in rows]

    def backend_cpu(self) -> dict[int, float] | None:
        """CPU seconds so far of each backend of this database (None: the server is not
        on this machine, so its processes cannot be read)."""
        if not self.local:
            return None
        cpu = {}
        for pid in self.backends():
            try:
                if not Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                    return None  # another process namespace: not the server's processes
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
        return cpu

    def wait_disconnected(self, timeout: float = 15.0) -> None:
        """Wait until no backend serves this database (each reports its counts when it
        exits), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.backends() and time.monotonic() < deadline:
            time.sleep(0.05)


# Rows of an earlier history, in the shapes the service writes: keys as random as its
# own (transaction ids from uuid4, attempt references from a hash), on accounts the bench
# does not use, old enough to stay out of every 30-day sum, every attempt decided, every
# ride captured and every event numbered, so that no worker acts on them.
_HISTORY = """
INSERT INTO transactions (id, type, status, amount_idr, mobile_number, counterparty,
                          create_time, update_time)
SELECT 'txn_' || md5(random()::text || g), 'TRANSFER', 'SUCCEEDED', 1000,
       '+62899' || lpad((g % 100000)::text, 7, '0'), '+62898' || lpad((g % 9973)::text, 7, '0'),
       $2 - 5e6 + g, $2 - 5e6 + g
FROM generate_series(1, $1) AS g;

INSERT INTO attempts (reference, transaction_id, leg, call, amount_idr, status, next_check_at,
                      create_time, update_time)
SELECT upper(substr(md5(random()::text || id), 1, 16)), id, 'main', 'p2p_transfer', 1000,
       'succeeded', create_time, create_time, create_time
FROM transactions WHERE id LIKE 'txn\\_%' AND mobile_number LIKE '+62899%';

INSERT INTO ledger_lines (transaction_id, reference, account, amount_idr, create_time)
SELECT a.transaction_id, a.reference, side.account, side.amount, a.create_time
FROM attempts a JOIN transactions t ON t.id = a.transaction_id,
     LATERAL (VALUES (t.mobile_number, -1000), (t.counterparty, 1000)) AS side(account, amount)
WHERE t.mobile_number LIKE '+62899%';

INSERT INTO ride_payments (ride_id, status, passenger, driver, held_amount_idr, final_fare_idr,
                           expire_time, hold_transaction, create_time, update_time)
SELECT 'ride-' || md5(random()::text || g), 'CAPTURED', '+62899' || lpad(g::text, 7, '0'),
       '+62898' || lpad(g::text, 7, '0'), 1000, 1000, $2, 'txn_' || md5(g::text), $2 - 5e6,
       $2 - 5e6
FROM generate_series(1, $1 / 2) AS g;

INSERT INTO idempotency_keys (caller, method, request_id, request_hash, state, lease_until,
                              created_at, holder)
SELECT 'bench', (ARRAY['Transfer', 'AuthorizeRidePayment', 'CaptureRidePayment'])[1 + g % 3],
       md5(random()::text || g), '\\x00', 'done', $2, $2 - random() * 3600, ''
FROM generate_series(1, $1) AS g;

INSERT INTO events (sequence, event_id, type, subject_id, snapshot, occurred_at)
SELECT (SELECT COALESCE(MAX(sequence), 0) FROM events) + g, md5(random()::text || g),
       'transaction.updated', 'txn_' || md5(g::text), '{}',
       $2 - 5e6
FROM generate_series(1, $1) AS g;
"""


def fill_history(url: str, rows: int) -> None:
    """Give the database ``rows`` earlier transfers (with their attempts, ledger lines,
    idempotency keys and events) and half as many captured rides, then ANALYZE it: the
    size of a database in service, whose indexes span many pages."""

    async def fill() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            # $1 and $2 stand for two numbers of ours, written into the text.
            sql = _HISTORY.replace("$1", str(rows)).replace("$2", repr(time.time()))
            async with conn.transaction():
                await conn.execute(sql)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    _run(fill())

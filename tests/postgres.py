"""Fresh PostgreSQL databases for tests, on the server named by WALLET_TEST_POSTGRES_URL
(e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``; README, "Tests on PostgreSQL").

Each test gets a database of its own, created for it and dropped after it. Without the
variable, the PostgreSQL half of the suite is skipped; CI sets it and fails, never skips,
when the server cannot be reached (.ci/run).

A test that starts the service gets its database already migrated: a copy of a template
that this process migrated once (``CREATE DATABASE … TEMPLATE``), which costs a tenth of
migrating each one. Tests of the migrations themselves ask for an empty one. A database
is dropped by a thread of its own after its test (dropping makes the server checkpoint:
a few hundred milliseconds the test need not wait for); the process waits for the drops,
and drops its template, before it exits.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from wallet_service.store.database import Database

ADMIN_URL = os.environ.get("WALLET_TEST_POSTGRES_URL", "").strip()
SKIP_REASON = 'WALLET_TEST_POSTGRES_URL is not set (README, "Tests on PostgreSQL")'


def database_url(name: str) -> str:
    """ADMIN_URL with its database replaced by ``name``."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


_drops = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-test-databases")
_template: str | None = None


@asynccontextmanager
async def fresh_database(
    prefix: str = "wallet_test", *, migrated: bool = False
) -> AsyncIterator[str]:
    """The URL of a new database (empty, or ``migrated`` to the latest schema), dropped
    (its connections ended) after the block."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{await _migrated_template()}"' if migrated else ""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{template}')
    finally:
        await admin.close()
    try:
        yield database_url(name)
    finally:
        _drops.submit(asyncio.run, _drop(name))


async def _migrated_template() -> str:
    global _template
    if _template is None:
        name = f"wallet_template_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        atexit.register(lambda: asyncio.run(_drop(name)))
        await (await Database.open(database_url(name), pool_size=1)).close()
        _template = name
    return _template


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _check() -> None:
    if not ADMIN_URL:
        raise SystemExit(SKIP_REASON)
    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    print(f"PostgreSQL {version} answers at {urlsplit(ADMIN_URL).hostname}")


if __name__ == "__main__":  # `make postgres-check`: fails unless the server answers
    asyncio.run(_check())

"""Fresh PostgreSQL databases for tests, on the server named by WALLET_TEST_POSTGRES_URL
(e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``; README, "Tests on PostgreSQL").

Each test gets a database of its own, created empty and dropped after it. Without the
variable, the PostgreSQL half of the suite is skipped; CI sets it and fails, never skips,
when the server cannot be reached (.ci/run).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ADMIN_URL = os.environ.get("WALLET_TEST_POSTGRES_URL", "").strip()
SKIP_REASON = 'WALLET_TEST_POSTGRES_URL is not set (README, "Tests on PostgreSQL")'


def database_url(name: str) -> str:
    """ADMIN_URL with its database replaced by ``name``."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def fresh_database(prefix: str = "wallet_test") -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped (its connections ended) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url(name)
    finally:
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
    import asyncio

    asyncio.run(_check())

"""Per test: a fresh database on the PostgreSQL server WALLET_TEST_POSTGRES_URL names
(dropped after; tests/postgres.py), a standalone sandbox process, and the replicas the
test starts. Without the variable these tests are skipped."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
from postgres import ADMIN_URL, SKIP_REASON, database_url, fresh_database

from wallet_service import cluster
from wallet_service.cluster import ReplicaPorts

from .harness import DATABASE_PREFIX, Cluster, free_port


@pytest.fixture(autouse=True)
def needs_postgres() -> None:
    if not ADMIN_URL:
        pytest.skip(SKIP_REASON)


@pytest_asyncio.fixture
async def missing_database() -> AsyncIterator[str]:
    """The URL of a database that does not exist yet; dropped after the test if it does."""
    name = f"{DATABASE_PREFIX}_{os.urandom(6).hex()}"
    yield database_url(name)
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {cluster.quoted(name)} WITH (FORCE)")
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The sandbox process on a fresh database; the test starts the replicas."""
    first = ReplicaPorts(free_port(), free_port())
    sandbox_port = free_port()
    async with fresh_database(DATABASE_PREFIX) as url:
        sandbox = cluster.spawn(
            "sandbox",
            cluster.sandbox_args(
                # A callback to a replica a test killed is tried again within seconds.
                sandbox_port,
                first.callback_url,
                "--no-access-log",
                "--callback-retries",
                "quick",
            ),
            cluster.without_wallet_settings(os.environ),
            tmp_path / "sandbox.log",
        )
        db = await asyncpg.connect(url)
        control = httpx.AsyncClient(base_url=f"http://127.0.0.1:{sandbox_port}", timeout=10.0)
        running = Cluster(url, tmp_path, db, control, sandbox, sandbox_port, first)
        try:
            while not cluster.port_open(sandbox_port):
                assert sandbox.exited() is None, sandbox.log.read_text()
                await asyncio.sleep(0.02)
            yield running
        finally:
            await running.stop()
            await control.aclose()
            await db.close()

"""Per test: a fresh database on the PostgreSQL server WALLET_TEST_POSTGRES_URL names
(dropped after), a standalone sandbox process, and the replicas the test starts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from wallet_service import cluster
from wallet_service.cluster import ReplicaPorts

from .harness import Cluster, free_port, new_database_name

SERVER_VARIABLE = "WALLET_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The server the tests create their databases on; without it they are skipped."""
    url = os.environ.get(SERVER_VARIABLE, "").strip()
    if not url:
        pytest.skip(
            f"{SERVER_VARIABLE} is not set: the multi-replica tests need a PostgreSQL server "
            f"(e.g. {SERVER_VARIABLE}=postgresql://postgres@127.0.0.1:5432/postgres)"
        )
    return url


@pytest_asyncio.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """The URL of a database that does not exist yet; dropped after the test if it does."""
    name = new_database_name()
    yield cluster.with_database(postgres_url, name)
    server = await asyncpg.connect(postgres_url)
    try:
        await server.execute(f"DROP DATABASE IF EXISTS {cluster.quoted(name)} WITH (FORCE)")
    finally:
        await server.close()


@pytest_asyncio.fixture
async def database(postgres_url: str, database_url: str) -> str:
    """A fresh, empty database's URL."""
    server = await asyncpg.connect(postgres_url)
    try:
        name = database_url.rsplit("/", 1)[1]
        await server.execute(f"CREATE DATABASE {cluster.quoted(name)}")
    finally:
        await server.close()
    return database_url


@pytest_asyncio.fixture
async def stack(database: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """The sandbox process on the fresh database; the test starts the replicas."""
    first = ReplicaPorts(free_port(), free_port())
    sandbox_port = free_port()
    sandbox = cluster.spawn(
        "sandbox",
        cluster.sandbox_args(sandbox_port, first.callback_url, "--no-access-log"),
        cluster.without_wallet_settings(os.environ),
        tmp_path / "sandbox.log",
    )
    db = await asyncpg.connect(database)
    control = httpx.AsyncClient(base_url=f"http://127.0.0.1:{sandbox_port}", timeout=10.0)
    running = Cluster(database, tmp_path, db, control, sandbox, sandbox_port, first)
    try:
        while not cluster.port_open(sandbox_port):
            assert sandbox.exited() is None, sandbox.log.read_text()
            await asyncio.sleep(0.02)
        yield running
    finally:
        await running.stop()
        await control.aclose()
        await db.close()

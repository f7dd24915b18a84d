"""The server's life: health, graceful stop with calls in flight, migrations, restarts."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from postgres import ADMIN_URL
from wallet.v1 import account_service_pb2

from wallet_service.server import WalletService, start
from wallet_service.store.database import latest_version, migrations

from .conftest import (
    APP,
    DEADLINE,
    INQUIRY_PATH,
    LOCAL,
    REGISTER_PATH,
    Harness,
    closed_port,
    expect_failure,
    wait_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = (
    "",
    "wallet.v1.AccountService",
    "wallet.v1.FundingService",
    "wallet.v1.PaymentService",
    "wallet.v1.TransactionService",
    "wallet.v1.AdminService",
)


def read_database(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the service's database through a separate read-only connection."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return list(connection.execute(sql).fetchall())


@pytest.mark.parametrize("service", SERVICES)
async def test_health_reports_serving(h: Harness, service: str) -> None:
    answer = await h.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE)

    assert answer.status == SERVING


@pytest.mark.postgresql_only
async def test_a_replica_that_cannot_reach_its_database_is_not_serving_until_it_can(
    h: Harness,
) -> None:
    """The database refuses every connection of the service (its backends ended, new ones
    refused): health turns NOT_SERVING, on gRPC and /healthz, and SERVING again once the
    database takes connections (docs/operations.md, "Health, shutdown")."""
    name = h.config.db_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(ADMIN_URL)

    async def status() -> int:
        answer = await h.health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
        return int(answer.status)

    async def healthz() -> int:
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{h.running.http_port}/healthz")
        return reply.status_code

    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )

        async def not_serving() -> bool:
            return bool(await status() == NOT_SERVING)

        await wait_for(not_serving, timeout=20)
        assert await healthz() == 503
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()

    async def serving() -> bool:
        return bool(await status() == SERVING)

    await wait_for(serving, timeout=20)
    assert await healthz() == 200
    # The database answers the calls again: an unknown customer is looked up there.
    failure = await expect_failure(
        h.accounts.GetAccount(
            account_service_pb2.GetAccountRequest(mobile_number=LOCAL),
            metadata=APP,
            timeout=DEADLINE,
        )
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_health_of_an_unknown_service_is_not_found(h: Harness) -> None:
    failure = await expect_failure(
        h.health.Check(health_pb2.HealthCheckRequest(service="wallet.v1.Nope"), timeout=DEADLINE)
    )

    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_graceful_stop_finishes_calls_in_flight_and_refuses_new_ones(h: Harness) -> None:
    await h.register()
    inquiries = len(await h.kaspro_requests(INQUIRY_PATH))
    await h.arm_fault(INQUIRY_PATH, "delay", delay_seconds=0.5)
    watches = [
        h.health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=DEADLINE)
        for name in SERVICES
    ]
    for watch in watches:
        assert (await watch.read()).status == SERVING

    in_flight = asyncio.ensure_future(h.get_account())

    async def reached_kaspro() -> bool:
        return len(await h.kaspro_requests(INQUIRY_PATH)) > inquiries

    await wait_for(reached_kaspro)
    stopping = asyncio.ensure_future(h.running.stop(grace=5.0))

    for watch in watches:
        assert (await watch.read()).status == NOT_SERVING
        watch.cancel()
    failure = await expect_failure(h.get_account())
    assert failure.code == grpc.StatusCode.UNAVAILABLE

    account = await in_flight
    assert account.mobile_number == "+6281234567890"
    # Stopped as soon as the last call finished, not at the end of the 5 s grace period.
    await asyncio.wait_for(stopping, timeout=4.0)


async def test_stop_does_not_wait_past_the_grace_period(h: Harness) -> None:
    await h.register()
    await h.arm_fault(INQUIRY_PATH, "delay", delay_seconds=3.0)
    in_flight = asyncio.ensure_future(h.get_account())
    inquiries = len(await h.kaspro_requests(INQUIRY_PATH))

    async def reached_kaspro() -> bool:
        return len(await h.kaspro_requests(INQUIRY_PATH)) > inquiries

    await wait_for(reached_kaspro)
    # Had stop() waited for the call, it would take the whole 3 s delay.
    await asyncio.wait_for(h.running.stop(grace=0.2), timeout=2.0)

    failure = await expect_failure(in_flight)
    assert failure.code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


@pytest.mark.sqlite_only
async def test_migrations_are_applied_at_start(h: Harness) -> None:
    (version,) = read_database(h.db_path, "PRAGMA user_version")[0]
    tables = {
        name
        for (name,) in read_database(
            h.db_path, "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }

    assert isinstance(version, int)
    assert version >= 1
    assert {"customers", "otp_state", "otp_sends", "idempotency_keys"} <= tables
    (journal_mode,) = read_database(h.db_path, "PRAGMA journal_mode")[0]
    assert journal_mode == "wal"


@pytest.mark.sqlite_only
async def test_restart_reapplies_nothing_and_keeps_the_data(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await h.register()
    await h.link()
    (version,) = read_database(h.db_path, "PRAGMA user_version")[0]
    rows_before = read_database(h.db_path, "SELECT * FROM customers")

    with caplog.at_level(logging.INFO):
        await h.restart()

    assert read_database(h.db_path, "PRAGMA user_version")[0] == (version,)
    assert read_database(h.db_path, "SELECT * FROM customers") == rows_before
    assert not [r for r in caplog.records if "migration" in r.getMessage()]
    assert (await h.get_account()).linked is True


@pytest.mark.sqlite_only
async def test_a_fresh_database_logs_its_migrations(
    h: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await h.restart(h.with_config(db_path=str(tmp_path / "other" / "fresh.db")))

    applied = [r for r in caplog.records if "migration" in r.getMessage()]
    assert len(applied) == len(migrations("sqlite"))
    (version,) = read_database(h.db_path, "PRAGMA user_version")[0]
    assert version == latest_version("sqlite")


async def test_idempotency_survives_a_restart(h: Harness) -> None:
    request = account_service_pb2.RegisterCustomerRequest(
        request_id="before-restart", mobile_number=LOCAL, first_name="Budi"
    )
    first = await h.accounts.RegisterCustomer(request, metadata=APP, timeout=DEADLINE)

    await h.restart()
    calls = await h.kaspro_requests()
    second = await h.accounts.RegisterCustomer(request, metadata=APP, timeout=DEADLINE)

    assert second == first
    assert await h.kaspro_requests() == calls
    assert len(await h.kaspro_requests(REGISTER_PATH)) == 1


async def test_a_second_service_cannot_take_a_port_in_use(h: Harness, tmp_path: Path) -> None:
    # Two services on one port would split calls between two SQLite writers.
    config = h.with_config(
        grpc_listen=f"127.0.0.1:{h.running.port}", db_path=str(tmp_path / "second.db")
    )
    second: WalletService | None = None
    try:
        with pytest.raises(OSError, match="cannot listen"):
            second = await start(config, clock=h.clock, kaspro_base_url=h.sandbox_url)
    finally:
        if second is not None:
            await second.stop(0)


async def test_a_start_that_fails_frees_what_it_had_taken(h: Harness, tmp_path: Path) -> None:
    grpc_listen = f"127.0.0.1:{closed_port()}"
    config = h.with_config(
        grpc_listen=grpc_listen,
        http_listen=f"127.0.0.1:{h.running.http_port}",  # taken by the running service
        db_path=str(tmp_path / "second.db"),
    )
    with pytest.raises(OSError, match="in use"):
        await start(config, clock=h.clock, kaspro_base_url=h.sandbox_url)

    second = await start(
        h.with_config(grpc_listen=grpc_listen, db_path=config.db_path),
        clock=h.clock,
        kaspro_base_url=h.sandbox_url,
    )
    try:
        assert second.address == grpc_listen
    finally:
        await second.stop(0)

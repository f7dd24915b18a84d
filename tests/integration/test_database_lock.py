"""Another process holding the database's write lock (a backup, ``sqlite3`` in a shell)
stops neither reads nor health checks; a write waits for the lock without stopping them,
or, held off past the wait, answers UNAVAILABLE / DATABASE_BUSY; and money moves once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from wallet.v1 import account_service_pb2, common_pb2, payment_service_pb2, transaction_service_pb2

from wallet_service.store import sqlite

from .conftest import (
    APP,
    DEADLINE,
    LOCAL,
    OTHER_LOCAL,
    Harness,
    assert_failure,
    failure_of,
    wait_for,
)

P2P_PATH = "/p2p-transaction/"
SUCCEEDED = common_pb2.TRANSACTION_STATUS_SUCCEEDED

# Takes the write lock, says so, and keeps it until a line arrives on stdin.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""

# The lock of the SQLite file; PostgreSQL has no such lock to hold.
pytestmark = pytest.mark.sqlite_only


@asynccontextmanager
async def write_lock_held_elsewhere(db_path: Path) -> AsyncIterator[None]:
    """The database's write lock, held by another process for the block's duration."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(db_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert await holder.stdout.readline() == b"locked\n"
        yield
    finally:
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        assert await holder.wait() == 0


def transfer(request_id: str = "transfer-1") -> payment_service_pb2.TransferRequest:
    return payment_service_pb2.TransferRequest(
        request_id=request_id,
        from_mobile_number=LOCAL,
        to_mobile_number=OTHER_LOCAL,
        amount_idr=25_000,
    )


async def send(h: Harness, request_id: str = "transfer-1") -> common_pb2.Transaction:
    response = await h.payments.Transfer(transfer(request_id), metadata=APP, timeout=DEADLINE)
    return response.transaction


async def outcome(h: Harness) -> Any:
    """The transfer's answer, or how it failed."""
    try:
        return await send(h)
    except grpc.aio.AioRpcError as exc:
        return failure_of(exc)


async def reads_and_health_answer(h: Harness) -> None:
    """Reads of the database and both health checks, each answered."""
    account = await h.get_account(LOCAL)
    assert account.linked
    listed = await h.transactions.ListTransactions(
        transaction_service_pb2.ListTransactionsRequest(mobile_number=LOCAL),
        metadata=APP,
        timeout=DEADLINE,
    )
    assert listed.transactions  # the top-up at least
    funds = await h.accounts.CheckFunds(
        account_service_pb2.CheckFundsRequest(mobile_number=LOCAL, amount_idr=1),
        metadata=APP,
        timeout=DEADLINE,
    )
    assert funds.sufficient
    health = await h.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.running.http_port}") as http:
        assert (await http.get("/healthz", timeout=DEADLINE)).status_code == 200
        assert (await http.get("/metrics", timeout=DEADLINE)).status_code == 200


async def assert_moved_once(h: Harness) -> None:
    balances = await h.sandbox_balances()
    assert (balances["subscribers"][LOCAL], balances["subscribers"][OTHER_LOCAL]) == (
        75_000,
        25_000,
    )
    assert len(await h.kaspro_requests(P2P_PATH)) == 1
    await h.assert_books_agree()


async def test_a_write_waits_for_the_lock_while_reads_and_health_answer(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "LOCK_WAIT_SECONDS", 60.0)  # longer than this test's reads
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")

    async with write_lock_held_elsewhere(h.db_path):
        in_flight = asyncio.create_task(send(h))
        # Its first write claims the request_id, before any KasPro call: it waits there.
        await asyncio.sleep(0.2)

        await reads_and_health_answer(h)

        assert not in_flight.done()  # still waiting for the lock, which is still held

    assert (await in_flight).status == SUCCEEDED
    await assert_moved_once(h)


async def test_a_write_held_off_past_the_wait_moves_nothing_and_a_retry_moves_it_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "LOCK_WAIT_SECONDS", 0.5)
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")

    async with write_lock_held_elsewhere(h.db_path):
        failure = await outcome(h)
        assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "DATABASE_BUSY")
        assert failure.retry_delay
        assert await h.kaspro_requests(P2P_PATH) == []  # refused before the money call
        await reads_and_health_answer(h)

    assert (await send(h)).status == SUCCEEDED  # the same request_id
    await assert_moved_once(h)


async def test_a_lock_taken_during_the_money_call_delays_its_booking_never_doubles_it(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "LOCK_WAIT_SECONDS", 0.5)
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    await h.arm_fault(P2P_PATH, "delay", delay_seconds=2.0)  # executed now, answered later
    in_flight = asyncio.create_task(outcome(h))
    await wait_for(lambda: _more_than(h, P2P_PATH, 0))

    async with write_lock_held_elsewhere(h.db_path):
        # KasPro's answer cannot be booked while the lock is held.
        failure = await in_flight
        assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "DATABASE_BUSY")
        await reads_and_health_answer(h)

    await h.settle()  # the reconciler asks KasPro how the call ended and books it
    # A retry with the same request_id reads the operation, once its key's end, held off
    # by the lock too, is written.
    await wait_for(lambda: _succeeds(h))
    await assert_moved_once(h)


async def _succeeds(h: Harness) -> bool:
    try:
        done = await send(h)
    except grpc.aio.AioRpcError as exc:
        assert_failure(failure_of(exc), grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")
        return False
    assert done.status == SUCCEEDED
    return True


async def _more_than(h: Harness, path: str, count: int) -> bool:
    return len(await h.kaspro_requests(path)) > count

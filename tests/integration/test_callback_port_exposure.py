"""The HTTP port (callbacks, /healthz, /metrics) under an attacker without credentials.

Over real sockets against the real service: a chunked body is cut at the limit while it
is read; connections past the port's cap are closed at once; idle and slow ones are
closed by the server; a hang-up mid-body is counted, not logged as an error; a flood of
unverified callbacks leaves the database and the calls to KasPro bounded. Meanwhile the
gRPC port keeps answering (docs/operations.md, "The callback port").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wallet.v1 import account_service_pb2, account_service_pb2_grpc, common_pb2

from .conftest import APP, DEADLINE, LOCAL, OTHER_LOCAL, Harness, wait_for
from .helpers import DEV_SECRET, body, get_transaction, pending_cash_out, sign

MB = 1024 * 1024
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
STATUS_PATH = "/transaction-status/"
CHUNKED_HEAD = (
    b"POST /callbacks/kaspro HTTP/1.1\r\nHost: wallet\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def metric(h: Harness, name: str, **labels: str) -> float:
    value = h.running.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def connect(h: Harness) -> Connection:
    return await asyncio.open_connection("127.0.0.1", h.running.http_port)


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert found is not None, field
    return int(found.group(1))


@contextlib.contextmanager
def peak_memory_growth() -> Iterator[list[int]]:
    """The growth of this process's peak resident memory (bytes) over the block: the
    service runs in the test process. Writing 5 to clear_refs resets the peak (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")
    start = _status_kib("VmRSS")
    growth: list[int] = []
    yield growth
    growth.append((_status_kib("VmHWM") - start) * 1024)


async def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()
    for _, writer in connections:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def grpc_still_answers(h: Harness) -> None:
    """A new channel can be dialed, and both a health check and a call are answered."""
    channel = h.new_channel()
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=DEADLINE
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    registered = await account_service_pb2_grpc.AccountServiceStub(channel).RegisterCustomer(
        account_service_pb2.RegisterCustomerRequest(
            request_id="during-the-flood",
            mobile_number=OTHER_LOCAL,
            first_name="Budi",
            last_name="Santoso",
            email="budi@example.com",
        ),
        metadata=APP,
        timeout=DEADLINE,
    )
    assert registered.account.mobile_number


# Bodies.


async def test_a_chunked_flood_is_cut_at_the_limit_and_memory_stays_bounded(h: Harness) -> None:
    """A chunked body declares no length: the limit must hold while it is read."""
    flood = 200 * MB
    chunk = b"x" * MB
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    reader, writer = await connect(h)
    sent = 0
    with peak_memory_growth() as growth:
        writer.write(CHUNKED_HEAD)
        with contextlib.suppress(ConnectionError):
            while sent < flood:
                writer.write(framed)
                await writer.drain()
                sent += len(chunk)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        # The server answered 413 and closed with the flood unread in its socket, so the
        # kernel resets the connection: the answer may be lost on the way.
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"HTTP/1.1 413"), head
    writer.close()

    # The server stopped reading at the limit and closed: the rest could not be sent.
    assert sent < flood // 4, sent
    assert growth[0] < 50 * MB, f"peak memory grew {growth[0] / MB:.0f} MB"
    assert metric(h, "wallet_callbacks_total", verdict="too_large") == 1


async def test_a_chunked_body_over_the_limit_is_answered_413_and_the_connection_closed(
    h: Harness,
) -> None:
    reader, writer = await connect(h)
    piece = b"x" * 1024
    writer.write(CHUNKED_HEAD + (b"400\r\n" + piece + b"\r\n") * 65 + b"0\r\n\r\n")
    await writer.drain()

    answer = await asyncio.wait_for(reader.read(), DEADLINE)  # all of it: the server closes
    writer.close()

    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"connection: close" in answer.lower()
    assert answer.endswith(b'{"error":"callback too large"}')
    assert await h.running.db.fetch_all("SELECT id FROM callbacks") == []


# Connections.


async def test_connections_past_the_cap_are_closed_at_once_and_grpc_still_answers(
    h: Harness,
) -> None:
    cap, extra = 2000, 500
    # A head timeout far beyond the test: whatever closes here was refused at the cap.
    await h.restart(h.with_config(http_max_connections=cap, http_head_timeout_seconds=600.0))
    connections = [await connect(h) for _ in range(cap + extra)]
    reads = [asyncio.ensure_future(reader.read(1)) for reader, _ in connections]
    try:

        async def extras_closed() -> bool:
            return sum(read.done() for read in reads) >= extra

        await wait_for(extras_closed, timeout=30.0)
        closed = [n for n, read in enumerate(reads) if read.done()]
        assert len(closed) == extra
        assert metric(h, "wallet_http_connections_refused_total") == extra
        assert metric(h, "wallet_http_connections") == cap
        # The port is full: the gRPC port is not.
        await grpc_still_answers(h)
    finally:
        for read in reads:
            read.cancel()
        await close_all(connections)


async def trickle(connection: Connection, data: bytes) -> None:
    """Send ``data`` a byte at a time, slowly, until the server closes the connection."""
    reader, writer = connection
    with contextlib.suppress(ConnectionError):
        for byte in data:
            if reader.at_eof():
                return
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)


async def test_idle_and_slow_connections_are_closed_by_the_server(h: Harness) -> None:
    await h.restart(
        h.with_config(
            http_max_connections=2000,
            http_head_timeout_seconds=1.0,
            http_body_timeout_seconds=1.0,
        )
    )
    idle = [await connect(h) for _ in range(1500)]
    slow_heads = [await connect(h) for _ in range(10)]
    slow_bodies = [await connect(h) for _ in range(10)]
    head = (
        b"POST /callbacks/kaspro HTTP/1.1\r\nHost: wallet\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    for _, writer in slow_bodies:
        writer.write(head)
    trickles = [asyncio.ensure_future(trickle(c, head)) for c in slow_heads]
    trickles += [asyncio.ensure_future(trickle(c, b"{" * 1000)) for c in slow_bodies]
    everyone = idle + slow_heads + slow_bodies
    reads = [asyncio.ensure_future(reader.read()) for reader, _ in everyone]
    try:
        # Meanwhile: below the cap, the port still serves; the gRPC port too.
        async with httpx.AsyncClient(timeout=DEADLINE) as client:
            health = await client.get(f"http://127.0.0.1:{h.running.http_port}/healthz")
        assert health.status_code == 200
        await grpc_still_answers(h)

        async def all_closed() -> bool:
            return all(read.done() for read in reads)

        await wait_for(all_closed, timeout=60.0)
        assert metric(h, "wallet_http_connections_timed_out_total", phase="head") >= 1510
        assert metric(h, "wallet_http_connections_timed_out_total", phase="body") >= 10
        assert metric(h, "wallet_http_connections") == 0
    finally:
        for task in [*reads, *trickles]:
            task.cancel()
        await close_all(everyone)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /healthz HTTP/1.1\r\nHost: wallet\r\nContent-Length: 5\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: wallet\r\nContent-Length: 5\r\n\r\n",
        b"POST /nowhere HTTP/1.1\r\nHost: wallet\r\nContent-Length: 5\r\n\r\n",
    ],
)
async def test_a_connection_answered_before_its_body_ended_is_still_closed_when_idle(
    h: Harness, head: bytes
) -> None:
    """A route that answers without reading the body (405, 404, a GET) ends the response
    first; the body's last bytes must not leave the connection without a deadline."""
    await h.restart(
        h.with_config(
            http_head_timeout_seconds=1.0,
            http_body_timeout_seconds=1.0,
            http_keep_alive_seconds=1,
        )
    )
    reader, writer = await connect(h)
    try:
        writer.write(head)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert answer.startswith(b"HTTP/1.1 "), answer
        await asyncio.sleep(0.1)
        writer.write(b"12345")  # the body, after the answer
        # The server closes it (the read ends) within the head timeout, not never.
        await asyncio.wait_for(reader.read(), DEADLINE)
        assert metric(h, "wallet_http_connections") == 0
    finally:
        await close_all([(reader, writer)])


async def test_a_kept_alive_connection_serves_request_after_request_then_is_closed_idle(
    h: Harness,
) -> None:
    await h.restart(h.with_config(http_head_timeout_seconds=5.0, http_keep_alive_seconds=1))
    reader, writer = await connect(h)
    get = b"GET /healthz HTTP/1.1\r\nHost: wallet\r\n\r\n"

    async def answer() -> bytes:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        length = re.search(rb"content-length: (\d+)", head.lower())
        assert length is not None, head
        return head + await reader.readexactly(int(length.group(1)))

    try:
        for _ in range(3):  # one after the other
            writer.write(get)
            assert (await answer()).startswith(b"HTTP/1.1 200")
        writer.write(get * 2)  # pipelined
        assert (await answer()).startswith(b"HTTP/1.1 200")
        assert (await answer()).startswith(b"HTTP/1.1 200")

        assert await asyncio.wait_for(reader.read(), DEADLINE) == b""  # then closed, idle
    finally:
        writer.close()
    closed = sum(
        metric(h, "wallet_http_connections_timed_out_total", phase=phase)
        for phase in ("head", "keep_alive")
    )
    assert closed == 1


async def test_a_sender_that_hangs_up_mid_body_is_counted_not_logged_as_an_error(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hang_ups = 300
    for _ in range(hang_ups):
        _, writer = await connect(h)
        writer.write(
            b"POST /callbacks/kaspro HTTP/1.1\r\nHost: wallet\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b"{" * 100
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def all_counted() -> bool:
        return metric(h, "wallet_callbacks_total", verdict="hung_up") >= hang_ups

    await wait_for(all_counted, timeout=30.0)
    assert metric(h, "wallet_callbacks_total", verdict="hung_up") == hang_ups
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud[:3]]
    told = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert len(told) <= 1, "one line per hang-up"


# Unverified callbacks.


def padded(document: dict[str, Any], size: int = 60_000) -> bytes:
    """``document`` as JSON, grown to about ``size`` bytes by a note field."""
    raw = json.dumps(document, separators=(",", ":")).encode()
    return json.dumps({**document, "note": "x" * (size - len(raw) - 10)}).encode()


def top_up(reference: str) -> dict[str, Any]:
    return {
        "reffId": "OLSFQ" + reference[-6:],
        "requestId": reference,
        "status": "SUCCESS",
        "code": 0,
        "message": "Berhasil",
        "amount": "500000",
        "serviceFee": "0",
        "mobileNumber": LOCAL,
        "type": "TOPUP",
        "channel": "VA",
        "vaNumber": "3935881234567890",
    }


async def database_bytes(h: Harness) -> int:
    """The database file's size once every committed page is in it."""
    await h.running.db.fetch_one("PRAGMA wal_checkpoint(TRUNCATE)")
    return h.db_path.stat().st_size


@pytest.mark.sqlite_only
async def test_an_unverified_flood_keeps_the_database_and_kaspro_calls_bounded(
    h: Harness,
) -> None:
    bound = 5
    await h.restart(h.with_config(unverified_top_up_checks=bound))
    c = await pending_cash_out(h)
    same = "TOPUP00000000000SAME"
    others = [f"TOPUP0000000000{n:05d}" for n in range(20)]
    top_ups = {same, *others}
    cash_out = json.loads(body(c.reference, c.reff_id))
    ledger, balances = await h.ledger(), await h.sandbox_balances()
    size = await database_bytes(h)
    before = Counter(e["requestId"] for e in await h.kaspro_requests(STATUS_PATH))

    async def flood(posts: int) -> None:
        url = f"http://127.0.0.1:{h.running.http_port}/callbacks/kaspro"
        async with httpx.AsyncClient(timeout=DEADLINE) as client:
            for n in range(posts):
                document = [top_up(same), top_up(others[n % 20]), cash_out][n % 3]
                raw = padded(document)
                now = str(int(h.clock()))
                headers = {"Content-Type": "application/json"}
                if n % 2:  # the other half signed, with the wrong secret
                    headers["KasPro-Callback-Timestamp"] = now
                    headers["KasPro-Callback-Signature"] = sign("not-" + DEV_SECRET, now, raw)
                response = await client.post(url, content=raw, headers=headers)
                assert response.status_code == 401, response.text

    for posts in (300, 60):  # the reconciler runs between and after the two waves
        await flood(posts)
        await h.running.reconciler.run_once()
        await h.running.reconciler.run_once()

    after = Counter(e["requestId"] for e in await h.kaspro_requests(STATUS_PATH))
    asked = after - before
    assert max(asked.values(), default=0) <= 1, asked
    assert sum(n for reference, n in asked.items() if reference in top_ups) <= bound, asked
    assert metric(h, "wallet_top_up_checks_dropped_total") > 0
    assert metric(h, "wallet_callbacks_total", verdict="unverified") == 360
    # A sample of the newest is kept (100 by default), each cut to its first kilobyte.
    sample = await h.running.db.fetch_one(
        "SELECT COUNT(*) AS n, MAX(LENGTH(head)) AS longest FROM unverified_callbacks"
    )
    assert sample is not None
    assert (sample["n"], sample["longest"]) == (100, 1024)
    assert metric(h, "wallet_unverified_callback_samples_dropped_total") == 260
    stored = await h.running.db.fetch_one("SELECT COUNT(*) AS n FROM callbacks")
    assert stored is not None
    top_ups_funding_the_wallet = 1
    assert stored["n"] == top_ups_funding_the_wallet
    # 21 MB of bodies were posted; the database keeps a bounded sample of them.
    assert await database_bytes(h) - size < 1 * MB
    # No money moved.
    assert await h.ledger() == ledger
    processing = common_pb2.TRANSACTION_STATUS_PROCESSING
    assert (await get_transaction(h, c.transaction_id)).status == processing
    assert await h.sandbox_balances() == balances


async def test_bodies_that_are_not_callbacks_are_refused_without_a_trace(h: Harness) -> None:
    """Unverified garbage of every size up to the limit is answered 401 and only sampled."""
    url = f"http://127.0.0.1:{h.running.http_port}/callbacks/kaspro"
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        for size in (0, 1, 1023, 1024, 1025, 64 * 1024):
            response = await client.post(url, content=b"\xff" * size)
            assert response.status_code == 401
    rows = await h.running.db.fetch_all(
        "SELECT size, LENGTH(head) AS kept, reason FROM unverified_callbacks ORDER BY id"
    )
    assert [(r["size"], r["kept"], r["reason"]) for r in rows] == [
        (size, min(size, 1024), "unsigned") for size in (0, 1, 1023, 1024, 1025, 64 * 1024)
    ]
    assert await h.running.db.fetch_all("SELECT id FROM callbacks") == []


async def test_malformed_requests_do_not_flood_the_log(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn warns about each malformed request; fifty of them make at most one line."""
    caplog.set_level(logging.WARNING)
    for _ in range(50):
        reader, writer = await connect(h)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await asyncio.wait_for(reader.read(), DEADLINE)
        await close_all([(reader, writer)])

    lines = [r for r in caplog.records if r.name == "uvicorn.error"]
    assert len(lines) <= 1, [r.getMessage() for r in lines]

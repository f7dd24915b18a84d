"""Under pressure: bursts past the concurrency limit, WatchEvents streams past their bounds,
money calls with too little deadline left, and a stop (the SIGTERM path) with money calls
in flight — nothing lost, books agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2
from wallet.v1 import account_service_pb2, common_pb2, transaction_service_pb2

from .conftest import (
    ADMIN,
    APP,
    DEADLINE,
    DISPATCH,
    INQUIRY_PATH,
    LOCAL,
    OTHER_LOCAL,
    Harness,
    Metadata,
    RpcFailure,
    assert_failure,
    expect_failure,
    failure_of,
    wait_for,
)
from .helpers import (
    P2P_PATH,
    PENDING,
    PROCESSING,
    SUCCEEDED,
    Books,
    get_transaction,
    money_calls,
    p2p_calls,
    send,
    transfer,
)

T = TypeVar("T")

OVERLOADED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TRANSFER = common_pb2.TRANSACTION_TYPE_TRANSFER

# The RPCs that start KasPro money calls: the deadline guard covers exactly these.
MONEY_METHODS = (
    "/wallet.v1.FundingService/CashOut",
    "/wallet.v1.PaymentService/AuthorizeRidePayment",
    "/wallet.v1.PaymentService/CaptureRidePayment",
    "/wallet.v1.PaymentService/VoidRidePayment",
    "/wallet.v1.PaymentService/TipDriver",
    "/wallet.v1.PaymentService/Transfer",
    "/wallet.v1.PaymentService/PayQris",
)
SHORT_DEADLINE = "too little time left on the deadline to call KasPro safely"


async def timed(call: Awaitable[T]) -> tuple[T | RpcFailure, float]:
    """The call's response (or failure) and the loop time it completed at."""
    try:
        result: T | RpcFailure = await call
    except grpc.aio.AioRpcError as exc:
        result = failure_of(exc)
    return result, asyncio.get_running_loop().time()


async def transfers(h: Harness) -> list[common_pb2.Transaction]:
    """The sender's transfers, as the service lists them."""
    response = await h.transactions.ListTransactions(
        transaction_service_pb2.ListTransactionsRequest(mobile_number=LOCAL, page_size=50),
        metadata=APP,
        timeout=DEADLINE,
    )
    return [t for t in response.transactions if t.type == TRANSFER]


# A burst past WALLET_MAX_CONCURRENT_RPCS.


async def test_a_burst_past_the_limit_is_refused_while_the_admitted_calls_run(
    h: Harness,
) -> None:
    limit, burst = 3, 10
    await h.restart(h.with_config(max_concurrent_rpcs=limit))
    await h.register()
    await h.arm_fault(INQUIRY_PATH, "delay", times=limit, delay_seconds=1.0)
    started = asyncio.get_running_loop().time()

    results = await asyncio.gather(*(timed(h.get_account()) for _ in range(burst)))

    answered = [at for result, at in results if not isinstance(result, RpcFailure)]
    refused = [(result, at) for result, at in results if isinstance(result, RpcFailure)]
    assert len(answered) == limit
    assert len(refused) == burst - limit
    for failure, _ in refused:
        assert_failure(failure, OVERLOADED, "OVERLOADED")
        assert failure.retry_delay is not None
    # Refused at once: every refusal came back while the admitted calls still waited on
    # KasPro, rather than queueing behind them.
    assert max(at for _, at in refused) < min(answered)
    assert max(at for _, at in refused) - started < 0.9
    assert len(await h.kaspro_requests(INQUIRY_PATH)) >= limit
    # The slots are given back: the next call is served.
    assert (await h.get_account()).mobile_number == "+6281234567890"


async def test_money_calls_refused_for_overload_move_nothing_and_can_be_retried(
    h: Harness,
) -> None:
    limit, burst = 2, 6
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    await h.restart(h.with_config(max_concurrent_rpcs=limit))
    await h.arm_fault(P2P_PATH, "delay", times=limit, delay_seconds=0.5)
    requests = [transfer(5_000, request_id=f"burst-{i}") for i in range(burst)]

    results = await asyncio.gather(*(timed(send(h, r)) for r in requests))

    done = [r.request_id for r, (result, _) in zip(requests, results, strict=True)]
    answered = [
        request_id
        for request_id, (result, _) in zip(done, results, strict=True)
        if not isinstance(result, RpcFailure)
    ]
    refused = [request_id for request_id in done if request_id not in answered]
    assert len(answered) == limit
    for result, _ in results:
        if isinstance(result, RpcFailure):
            assert_failure(result, OVERLOADED, "OVERLOADED")
        else:
            assert result.status == SUCCEEDED
    # Only the admitted transfers reached KasPro and the books.
    assert len(await p2p_calls(h)) == limit
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 100_000 - limit * 5_000
    await h.assert_books_agree()
    assert len(await transfers(h)) == limit

    # The refusal was not stored under the request_id: a retry runs the transfer.
    for request in requests:
        if request.request_id in refused:
            assert (await send(h, request)).status == SUCCEEDED
    assert len(await p2p_calls(h)) == burst
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 100_000 - burst * 5_000
    await h.assert_books_agree()


async def test_past_the_limit_a_call_is_refused_while_the_admitted_ones_wait_on_kaspro(
    h: Harness,
) -> None:
    limit = 5
    await h.register()
    await h.restart(h.with_config(max_concurrent_rpcs=limit))
    # The admitted calls stay parked at KasPro far longer than any refusal should take.
    await h.arm_fault(INQUIRY_PATH, "delay", times=limit, delay_seconds=5.0)
    before = len(await h.kaspro_requests(INQUIRY_PATH))
    parked = [asyncio.ensure_future(h.get_account()) for _ in range(limit)]

    async def all_parked() -> bool:
        return len(await h.kaspro_requests(INQUIRY_PATH)) == before + limit

    await wait_for(all_parked)

    refused = await expect_failure(h.get_account())
    health = await h.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)

    assert_failure(refused, OVERLOADED, "OVERLOADED")
    assert refused.retry_delay is not None
    assert dict(refused.error_metadata) == {"limit": "concurrent_rpcs"}
    # Health is never counted: it answers while the unary calls are at their limit.
    assert health.status == SERVING
    # Both answers came while every admitted call was still waiting on KasPro.
    assert not any(call.done() for call in parked)
    assert len(await h.kaspro_requests(INQUIRY_PATH)) == before + limit
    for call in parked:
        call.cancel()
    await asyncio.gather(*parked, return_exceptions=True)


# WatchEvents streams past WALLET_MAX_WATCH_STREAMS(_PER_CALLER).

WatchCall = Any  # grpc.aio.UnaryStreamCall of WatchEvents


async def watch(h: Harness, metadata: Metadata, *, timeout: float | None = None) -> WatchCall:
    """A WatchEvents stream the service admitted: its first event has arrived."""
    call = h.transactions.WatchEvents(
        transaction_service_pb2.WatchEventsRequest(after_sequence=0),
        metadata=metadata,
        timeout=timeout,
    )
    response = await asyncio.wait_for(call.read(), DEADLINE)
    assert isinstance(response, transaction_service_pb2.WatchEventsResponse), response
    return call


async def watch_once_admitted(h: Harness, metadata: Metadata) -> WatchCall:
    """A stream opened as soon as a slot is given back (OVERLOADED until then)."""
    opened: list[WatchCall] = []

    async def admitted() -> bool:
        try:
            opened.append(await watch(h, metadata))
        except grpc.aio.AioRpcError as exc:
            assert_failure(failure_of(exc), OVERLOADED, "OVERLOADED")
            return False
        return True

    await wait_for(admitted)
    return opened[0]


async def test_watch_streams_are_bounded_per_caller(h: Harness) -> None:
    await h.onboard(LOCAL)  # an event, so that an admitted stream answers at once
    await h.restart(h.with_config(max_watch_streams=10, max_watch_streams_per_caller=2))
    first = await watch(h, DISPATCH)
    # Ends by its deadline, later on: 2 s leaves the checks below ample time to run first.
    await watch(h, DISPATCH, timeout=2.0)

    refused = await expect_failure(watch(h, DISPATCH))

    assert_failure(refused, OVERLOADED, "OVERLOADED")
    assert refused.retry_delay is not None
    assert dict(refused.error_metadata) == {"limit": "watch_streams_per_caller"}
    # Another caller still gets a stream, and unary calls are not held up.
    await watch(h, ADMIN)
    assert (await h.get_account()).mobile_number == "+6281234567890"
    # A slot comes back when a stream ends: its deadline passes...
    await watch_once_admitted(h, DISPATCH)
    # ...or its caller hangs up.
    first.cancel()
    await watch_once_admitted(h, DISPATCH)
    assert_failure(await expect_failure(watch(h, DISPATCH)), OVERLOADED, "OVERLOADED")


async def test_watch_streams_are_bounded_in_total(h: Harness) -> None:
    await h.onboard(LOCAL)
    await h.restart(h.with_config(max_watch_streams=3, max_watch_streams_per_caller=2))
    await watch(h, DISPATCH)
    await watch(h, DISPATCH)
    admin = await watch(h, ADMIN)

    refused = await expect_failure(watch(h, ADMIN))

    assert_failure(refused, OVERLOADED, "OVERLOADED")
    assert refused.retry_delay is not None
    assert dict(refused.error_metadata) == {"limit": "watch_streams"}
    health = await h.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)
    assert health.status == SERVING
    admin.cancel()
    await watch_once_admitted(h, ADMIN)


# The deadline guard of money calls (WALLET_MIN_MONEY_DEADLINE_SECONDS, 1 s).


@pytest.mark.parametrize("method", MONEY_METHODS)
async def test_a_money_call_with_too_little_deadline_is_refused_before_anything(
    h: Harness, method: str
) -> None:
    before = await h.kaspro_requests()
    assert h.channel is not None
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = h.channel.unary_unary(method)

    # An empty request: the guard answers before validation, idempotency or KasPro.
    failure = await expect_failure(call(b"", metadata=ADMIN, timeout=0.5))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert failure.message.startswith(SHORT_DEADLINE)
    assert dict(failure.error_metadata) == {"min_deadline_seconds": "1"}
    assert await h.kaspro_requests() == before


async def test_a_refused_short_deadline_transfer_starts_nothing_and_a_retry_runs(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    books = await Books.take(h)
    before = await h.kaspro_requests()

    failure = await expect_failure(h.payments.Transfer(transfer(), metadata=APP, timeout=0.5))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert "transaction_id" not in failure.error_metadata
    assert await h.kaspro_requests() == before  # not even the receiver's account inquiry
    assert await transfers(h) == []
    await books.assert_unchanged(h)
    # Nothing was claimed under the request_id: the retry with a proper deadline runs.
    retried = await send(h, transfer())
    assert retried.status == SUCCEEDED
    assert len(await p2p_calls(h)) == 1
    await h.assert_books_agree()


async def test_the_deadline_guard_spares_reads_onboarding_and_calls_without_deadline(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")

    account = await h.accounts.GetAccount(
        account_service_pb2.GetAccountRequest(mobile_number=LOCAL),
        metadata=APP,
        timeout=0.5,
    )
    assert account.account.mobile_number == "+6281234567890"
    # No deadline at all: nothing to guard.
    response = await h.payments.Transfer(transfer(), metadata=APP)
    assert response.transaction.status == SUCCEEDED


@pytest.mark.parametrize(
    ("minimum", "timeout", "refused"),
    [(0.0, 0.5, False), (0.3, 0.8, False), (2.0, 1.5, True)],
)
async def test_the_deadline_guard_follows_its_setting(
    h: Harness, minimum: float, timeout: float, refused: bool
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    await h.restart(h.with_config(min_money_deadline_seconds=minimum))

    result = await timed(h.payments.Transfer(transfer(), metadata=APP, timeout=timeout))

    outcome = result[0]
    if refused:
        assert isinstance(outcome, RpcFailure)
        assert_failure(outcome, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
        assert outcome.error_metadata["min_deadline_seconds"] == f"{minimum:g}"
        assert await money_calls(h) == []
    else:
        assert not isinstance(outcome, RpcFailure), outcome
        assert outcome.transaction.status == SUCCEEDED


async def test_authentication_comes_before_the_deadline_guard(h: Harness) -> None:
    failure = await expect_failure(h.payments.Transfer(transfer(), timeout=0.5))

    assert_failure(failure, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


# Stopping (SIGTERM's handler calls the same WalletService.stop) with money in flight.


async def test_stop_under_load_finishes_money_in_flight_and_loses_nothing(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    in_flight_count = 3
    await h.arm_fault(P2P_PATH, "delay", times=in_flight_count, delay_seconds=0.7)
    watch = h.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)
    assert (await watch.read()).status == SERVING
    requests = [transfer(10_000, request_id=f"in-flight-{i}") for i in range(in_flight_count)]
    in_flight = [asyncio.ensure_future(send(h, r)) for r in requests]

    async def all_reached_kaspro() -> bool:
        return len(await p2p_calls(h)) == in_flight_count

    await wait_for(all_reached_kaspro)
    stopping = asyncio.ensure_future(h.running.stop(grace=5.0))

    assert (await watch.read()).status == NOT_SERVING
    watch.cancel()
    late = await expect_failure(send(h, transfer(10_000, request_id="too-late")))
    assert late.code == UNAVAILABLE
    finished = await asyncio.gather(*in_flight)
    assert [t.status for t in finished] == [SUCCEEDED] * in_flight_count
    # The stop ends when the last call does, well inside the grace period.
    await asyncio.wait_for(stopping, timeout=4.0)

    # Nothing lost: after a restart both books agree and nothing is left to settle.
    await h.restart()
    assert await h.settle() == 0
    listed = await transfers(h)
    assert sorted(t.transaction_id for t in listed) == sorted(t.transaction_id for t in finished)
    assert {t.status for t in listed} == {SUCCEEDED}
    assert len(await p2p_calls(h)) == in_flight_count  # the late one never reached KasPro
    balances = (await h.sandbox_balances())["subscribers"]
    assert (balances[LOCAL], balances[OTHER_LOCAL]) == (70_000, 30_000)
    await h.assert_books_agree()


async def test_a_money_call_cut_off_by_the_grace_period_is_settled_after_a_restart(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    ledger_before = await h.ledger()
    # KasPro carries the transfer out, then answers after the grace period has run out.
    await h.arm_fault(P2P_PATH, "delay", delay_seconds=1.5)
    cut_off = asyncio.ensure_future(send(h, transfer()))

    async def reached_kaspro() -> bool:
        return len(await p2p_calls(h)) == 1

    await wait_for(reached_kaspro)
    await asyncio.wait_for(h.running.stop(grace=0.2), timeout=2.0)

    failure = await expect_failure(cut_off)
    assert failure.code in (grpc.StatusCode.CANCELLED, UNAVAILABLE)

    await h.restart()
    (pending,) = await transfers(h)
    # Not final: the attempt was sent and its answer never recorded (the flow was
    # cancelled before it could mark the transaction PROCESSING, so it may still say
    # PENDING — the state a crash leaves too).
    assert pending.status in (PENDING, PROCESSING)
    assert await h.ledger() == ledger_before  # unknown is not booked

    assert await h.settle() == 1

    settled = await get_transaction(h, pending.transaction_id)
    assert (settled.status, settled.amount_idr) == (SUCCEEDED, 25_000)
    assert len(await p2p_calls(h)) == 1  # asked about, never sent twice
    balances = (await h.sandbox_balances())["subscribers"]
    assert (balances[LOCAL], balances[OTHER_LOCAL]) == (75_000, 25_000)
    await h.assert_books_agree()
    # The caller's retry with the same request_id reads the settled transfer.
    replay = await send(h, transfer())
    assert (replay.transaction_id, replay.status) == (pending.transaction_id, SUCCEEDED)
    assert len(await p2p_calls(h)) == 1

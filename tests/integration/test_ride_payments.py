"""Ride payments (MONEY-RULES rule 7): a hold in escrow, then a capture, a void or an expiry.

Every money assertion reads both sets of books: the sandbox's balances and journal (what
KasPro did) and our ledger (what we booked). Every refusal is checked to have moved
nothing, and KasPro's request log says how often each money path was called.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from wallet.v1 import common_pb2, payment_service_pb2

from wallet_service.flows.engine import Timing
from wallet_service.kaspro import kaspro_request_id

from .conftest import (
    ADMIN,
    APP,
    DEADLINE,
    DISPATCH,
    LOCAL,
    OTHER_LOCAL,
    Harness,
    Metadata,
    assert_failure,
    expect_failure,
    failure_of,
    wait_for,
)
from .helpers import body, frozen, get_transaction, last_sequence, post

PASSENGER = LOCAL
DRIVER = OTHER_LOCAL
PASSENGER_E164 = "+6281234567890"
DRIVER_E164 = "+6285712345678"
ESCROW_ACCOUNT = "888000000000001"
CORPORATE_ACCOUNT = "888000000000003"

HOLD_PATH = "/pil-transaction-payment-to-merchant/"
P2P_PATH = "/p2p-transaction/"

RIDE = "ride-1"
HELD = 50_000
FARE = 42_000
FEE = 8_000
START = 100_000
BASIC_CAP = 2_000_000
# A KasPro answer this late is lost to a service whose KasPro timeout is 0.3 s.
DELAY = 1.0
SHORT_TIMEOUT = 0.3

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS

AUTHORIZING = common_pb2.RIDE_PAYMENT_STATUS_AUTHORIZING
AUTHORIZED = common_pb2.RIDE_PAYMENT_STATUS_AUTHORIZED
CAPTURING = common_pb2.RIDE_PAYMENT_STATUS_CAPTURING
CAPTURED = common_pb2.RIDE_PAYMENT_STATUS_CAPTURED
VOIDING = common_pb2.RIDE_PAYMENT_STATUS_VOIDING
VOIDED = common_pb2.RIDE_PAYMENT_STATUS_VOIDED
EXPIRED = common_pb2.RIDE_PAYMENT_STATUS_EXPIRED
FAILED = common_pb2.RIDE_PAYMENT_STATUS_FAILED


# Requests.


def authorize(
    *,
    ride_id: str = RIDE,
    amount_idr: int = HELD,
    request_id: str = "auth-1",
    passenger: str = PASSENGER,
) -> payment_service_pb2.AuthorizeRidePaymentRequest:
    return payment_service_pb2.AuthorizeRidePaymentRequest(
        request_id=request_id,
        ride_id=ride_id,
        passenger_mobile_number=passenger,
        amount_idr=amount_idr,
    )


def capture(
    *,
    ride_id: str = RIDE,
    final_fare_idr: int = FARE,
    platform_fee_idr: int = FEE,
    request_id: str = "capture-1",
    driver: str = DRIVER,
) -> payment_service_pb2.CaptureRidePaymentRequest:
    return payment_service_pb2.CaptureRidePaymentRequest(
        request_id=request_id,
        ride_id=ride_id,
        final_fare_idr=final_fare_idr,
        driver_mobile_number=driver,
        platform_fee_idr=platform_fee_idr,
    )


def void(
    *, ride_id: str = RIDE, request_id: str = "void-1", reason: str = "cancelled by passenger"
) -> payment_service_pb2.VoidRidePaymentRequest:
    return payment_service_pb2.VoidRidePaymentRequest(
        request_id=request_id, ride_id=ride_id, reason=reason
    )


async def do_authorize(
    h: Harness, metadata: Metadata = DISPATCH, **fields: Any
) -> common_pb2.RidePayment:
    response = await h.payments.AuthorizeRidePayment(
        authorize(**fields), metadata=metadata, timeout=DEADLINE
    )
    return response.ride_payment


async def do_capture(h: Harness, **fields: Any) -> common_pb2.RidePayment:
    response = await h.payments.CaptureRidePayment(
        capture(**fields), metadata=DISPATCH, timeout=DEADLINE
    )
    return response.ride_payment


async def do_void(h: Harness, **fields: Any) -> common_pb2.RidePayment:
    response = await h.payments.VoidRidePayment(void(**fields), metadata=DISPATCH, timeout=DEADLINE)
    return response.ride_payment


async def get_ride(h: Harness, ride_id: str = RIDE) -> common_pb2.RidePayment:
    response = await h.payments.GetRidePayment(
        payment_service_pb2.GetRidePaymentRequest(ride_id=ride_id),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    return response.ride_payment


# Set-ups.


async def parties(h: Harness, passenger_balance: int = START) -> None:
    """A linked, funded passenger and a linked driver with an empty wallet."""
    await h.onboard(PASSENGER, passenger_balance)
    await h.onboard(DRIVER, name="Siti")


async def authorized(h: Harness, passenger_balance: int = START) -> common_pb2.RidePayment:
    await parties(h, passenger_balance)
    ride = await do_authorize(h)
    assert ride.status == AUTHORIZED, ride
    return ride


# Reading the books.


@dataclass(frozen=True)
class Books:
    """Both sets of books at one moment: what 'nothing moved' compares."""

    subscribers: dict[str, int]
    platform: dict[str, int]
    journal: int
    ledger: dict[str, int]


async def books(h: Harness) -> Books:
    balances = await h.sandbox_balances()
    return Books(
        subscribers=dict(balances["subscribers"]),
        platform=dict(balances["platform"]),
        journal=len(await h.sandbox_ledger()),
        ledger=await h.ledger(),
    )


async def assert_nothing_moved(h: Harness, before: Books) -> None:
    assert await books(h) == before
    await h.assert_books_agree()


async def balance(h: Harness, who: str) -> int:
    balances = await h.sandbox_balances()
    if who in ("escrow", "corporate"):
        return int(balances["platform"][who])
    return int(balances["subscribers"][who])


async def calls(h: Harness, path: str) -> int:
    return len(await h.kaspro_requests(path))


def reference(leg: str, ride_id: str = RIDE) -> str:
    """The deterministic KasPro reference of a ride leg (docs/money.md)."""
    return kaspro_request_id("ride", ride_id, leg)


async def journal_by_reference(h: Harness) -> Counter[str]:
    return Counter(entry["requestId"] for entry in await h.sandbox_ledger())


def ride_statuses(events: list[common_pb2.Event], ride_id: str = RIDE) -> list[int]:
    return [
        e.ride_payment.status
        for e in events
        if e.type == common_pb2.EVENT_TYPE_RIDE_PAYMENT_UPDATED
        and e.ride_payment.ride_id == ride_id
    ]


def ride_transactions(
    events: list[common_pb2.Event], type_: int, ride_id: str = RIDE
) -> list[common_pb2.Transaction]:
    return [
        e.transaction
        for e in events
        if e.type == common_pb2.EVENT_TYPE_TRANSACTION_UPDATED
        and e.transaction.ride_id == ride_id
        and e.transaction.type == type_
    ]


async def assert_captured_books(h: Harness, *, passenger: int, driver: int, corporate: int) -> None:
    assert await balance(h, PASSENGER) == passenger
    assert await balance(h, DRIVER) == driver
    assert await balance(h, "corporate") == corporate
    assert await balance(h, "escrow") == 0
    ledger = await h.ledger()
    assert ledger.get("escrow", 0) == 0
    assert ledger.get("corporate", 0) == corporate
    await h.assert_books_agree()


async def delayed_answer_sent(faulted_at: float) -> None:
    """Let the sandbox finish a delayed answer, so no request outlives the test."""
    remaining = faulted_at + DELAY + 0.1 - asyncio.get_running_loop().time()
    if remaining > 0:
        await asyncio.sleep(remaining)


async def settle_until(h: Harness, status: int, *, passes: int = 3) -> common_pb2.RidePayment:
    """Reconciler passes (each moving the clock) until the ride reaches ``status``."""
    ride = await get_ride(h)
    for _ in range(passes):
        if ride.status == status:
            break
        await h.settle()
        ride = await get_ride(h)
    return ride


def assert_each_leg_once(journal: Counter[str], legs: tuple[str, ...]) -> None:
    for leg in legs:
        assert journal[reference(leg)] == 1, (leg, journal)


# Authorize.


async def test_authorize_holds_the_fare_in_escrow(h: Harness) -> None:
    await parties(h)
    after = await last_sequence(h)

    ride = await do_authorize(h)

    assert ride.status == AUTHORIZED
    assert (ride.ride_id, ride.passenger_mobile_number, ride.held_amount_idr) == (
        RIDE,
        PASSENGER_E164,
        HELD,
    )
    assert (ride.driver_mobile_number, ride.final_fare_idr, ride.refund_idr) == ("", 0, 0)
    lifetime = ride.expire_time.ToSeconds() - ride.create_time.ToSeconds()
    assert abs(lifetime - 24 * 3600) <= 1
    # KasPro moved the fare from the passenger to escrow; our books say the same.
    assert await balance(h, PASSENGER) == START - HELD
    assert await balance(h, "escrow") == HELD
    ledger = await h.ledger()
    assert ledger["escrow"] == HELD  # escrow equals the sum of open holds
    assert ledger["subscriber:6281234567890"] == START - HELD
    await h.assert_books_agree()
    [entry] = [e for e in await h.sandbox_ledger() if e["requestId"] == reference("hold")]
    assert (entry["type"], entry["from"], entry["to"], entry["amount"]) == (
        "PAYMENT",
        PASSENGER,
        ESCROW_ACCOUNT,
        HELD,
    )
    # Events: the ride payment AUTHORIZING then AUTHORIZED; its hold transaction SUCCEEDED.
    events = await h.events(after)
    assert ride_statuses(events) == [AUTHORIZING, AUTHORIZED]
    holds = ride_transactions(events, common_pb2.TRANSACTION_TYPE_RIDE_HOLD)
    assert [t.status for t in holds][-1] == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert (holds[-1].amount_idr, holds[-1].mobile_number) == (HELD, PASSENGER_E164)
    # GetRidePayment reads the same payment (any caller with read rights).
    assert await get_ride(h) == ride
    read = await h.payments.GetRidePayment(
        payment_service_pb2.GetRidePaymentRequest(ride_id=RIDE), metadata=APP, timeout=DEADLINE
    )
    assert read.ride_payment == ride
    assert await calls(h, HOLD_PATH) == 1


async def test_a_retried_authorize_answers_the_same_without_a_second_call(h: Harness) -> None:
    first = await authorized(h)
    before = await books(h)

    again = await do_authorize(h)

    assert again == first
    assert await calls(h, HOLD_PATH) == 1
    await assert_nothing_moved(h, before)


async def test_a_retried_authorize_answers_the_rides_state_after_capture(h: Harness) -> None:
    first = await authorized(h)
    assert await do_authorize(h) == first

    captured = await do_capture(h)
    again = await do_authorize(h)

    # The retry sees the ride as it is now, not the AUTHORIZED answer it had before.
    assert captured.status == CAPTURED
    assert again == captured == await get_ride(h)
    assert await calls(h, HOLD_PATH) == 1


async def test_a_retried_authorize_answers_expired_after_the_sweeper(h: Harness) -> None:
    await h.restart(
        h.with_config(limits=dataclasses.replace(h.config.limits, hold_lifetime_seconds=60))
    )
    first = await authorized(h)
    assert await do_authorize(h) == first

    await h.settle(advance_seconds=120)  # the reconciler's sweeper, not a request, moves it
    again = await do_authorize(h)

    assert again.status == EXPIRED
    assert again == await get_ride(h)
    assert await calls(h, HOLD_PATH) == 1


async def test_one_ride_payment_per_ride(h: Harness) -> None:
    await authorized(h)
    before = await books(h)

    # Another request for the same ride (even the same amount) is refused...
    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(
            authorize(request_id="auth-2"), metadata=DISPATCH, timeout=DEADLINE
        )
    )
    assert_failure(failure, ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    # ... and so is its retry, and none of it reaches KasPro or moves money.
    again = await expect_failure(
        h.payments.AuthorizeRidePayment(
            authorize(request_id="auth-2"), metadata=DISPATCH, timeout=DEADLINE
        )
    )
    assert_failure(again, ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await calls(h, HOLD_PATH) == 1
    assert (await get_ride(h)).held_amount_idr == HELD
    await assert_nothing_moved(h, before)


async def test_same_request_id_with_another_amount_is_key_reused(h: Harness) -> None:
    await authorized(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(
            authorize(amount_idr=HELD + 1), metadata=DISPATCH, timeout=DEADLINE
        )
    )

    assert_failure(failure, ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await calls(h, HOLD_PATH) == 1
    await assert_nothing_moved(h, before)


async def test_concurrent_identical_authorizes_call_kaspro_once(h: Harness) -> None:
    await parties(h)

    answers = await asyncio.gather(
        *(do_authorize(h) for _ in range(20)),
        return_exceptions=True,
    )

    succeeded = 0
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            assert_failure(failure_of(answer), grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")
        else:
            assert isinstance(answer, common_pb2.RidePayment), answer
            assert (answer.ride_id, answer.status) == (RIDE, AUTHORIZED)
            succeeded += 1
    assert succeeded >= 1
    assert await calls(h, HOLD_PATH) == 1
    assert await balance(h, PASSENGER) == START - HELD
    assert await balance(h, "escrow") == HELD
    assert (await h.ledger())["escrow"] == HELD
    await h.assert_books_agree()


async def test_concurrent_authorizes_of_one_ride_with_different_requests_hold_once(
    h: Harness,
) -> None:
    await parties(h, passenger_balance=500_000)

    answers = await asyncio.gather(
        *(do_authorize(h, request_id=f"auth-{n}") for n in range(10)),
        return_exceptions=True,
    )

    won = [a for a in answers if isinstance(a, common_pb2.RidePayment)]
    assert len(won) == 1, answers
    assert won[0].status == AUTHORIZED
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            assert_failure(failure_of(answer), ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await calls(h, HOLD_PATH) == 1
    assert await balance(h, PASSENGER) == 500_000 - HELD
    assert (await h.ledger())["escrow"] == HELD
    await h.assert_books_agree()


async def test_hold_above_the_30_day_volume_cap_is_refused_before_kaspro(h: Harness) -> None:
    await parties(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(
            authorize(amount_idr=40_000_001), metadata=DISPATCH, timeout=DEADLINE
        )
    )

    assert_failure(failure, FAILED_PRECONDITION, "LIMIT_EXCEEDED")
    assert await calls(h, HOLD_PATH) == 0
    await assert_nothing_moved(h, before)


async def test_unlinked_passenger_is_refused_before_kaspro(h: Harness) -> None:
    await h.register(PASSENGER, request_id="register-passenger")
    before = await books(h)

    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(authorize(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "WALLET_NOT_LINKED")
    assert await calls(h, HOLD_PATH) == 0
    missing = await expect_failure(get_ride(h))
    assert_failure(missing, grpc.StatusCode.NOT_FOUND, "RIDE_PAYMENT_NOT_FOUND")
    await assert_nothing_moved(h, before)


async def test_insufficient_funds_fails_the_ride_and_moves_nothing(h: Harness) -> None:
    await parties(h, passenger_balance=10_000)
    before = await books(h)
    after = await last_sequence(h)

    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(authorize(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    ride = await get_ride(h)
    assert (ride.status, ride.held_amount_idr) == (FAILED, HELD)
    await assert_nothing_moved(h, before)
    assert (await h.ledger()).get("escrow", 0) == 0
    events = await h.events(after)
    assert ride_statuses(events) == [AUTHORIZING, FAILED]
    holds = ride_transactions(events, common_pb2.TRANSACTION_TYPE_RIDE_HOLD)
    assert holds[-1].status == common_pb2.TRANSACTION_STATUS_FAILED
    # Retries repeat the refusal without asking KasPro again.
    for _ in range(3):
        again = await expect_failure(
            h.payments.AuthorizeRidePayment(authorize(), metadata=DISPATCH, timeout=DEADLINE)
        )
        assert_failure(again, FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
        assert again.message == failure.message
    assert await calls(h, HOLD_PATH) == 1
    await assert_nothing_moved(h, before)


BAD_AUTHORIZE: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"ride_id": ""}, ("ride_id",)),
    ({"ride_id": "ride 1"}, ("ride_id",)),
    ({"ride_id": "r" * 65}, ("ride_id",)),
    ({"amount_idr": 0}, ("amount_idr",)),
    ({"amount_idr": -5_000}, ("amount_idr",)),
    ({"passenger": "12345"}, ("passenger_mobile_number",)),
    ({"passenger": ""}, ("passenger_mobile_number",)),
    ({"request_id": ""}, ("request_id",)),
    (
        {"ride_id": "", "amount_idr": 0, "passenger": "x"},
        ("ride_id", "amount_idr", "passenger_mobile_number"),
    ),
]


async def test_authorize_bad_input_names_the_fields(h: Harness) -> None:
    await parties(h)
    before = await books(h)

    for n, (fields, bad) in enumerate(BAD_AUTHORIZE):
        request = authorize(**{"request_id": f"auth-bad-{n}", **fields})
        failure = await expect_failure(
            h.payments.AuthorizeRidePayment(request, metadata=DISPATCH, timeout=DEADLINE)
        )
        assert (failure.code, sorted(set(failure.fields))) == (
            INVALID_ARGUMENT,
            sorted(bad),
        ), fields
        assert_failure(failure, INVALID_ARGUMENT, "INVALID_FIELD", *bad)

    assert await calls(h, HOLD_PATH) == 0
    await assert_nothing_moved(h, before)


async def test_only_dispatch_and_admin_move_ride_money(h: Harness) -> None:
    await authorized(h)
    before = await books(h)

    denied: list[Awaitable[Any]] = [
        h.payments.AuthorizeRidePayment(
            authorize(ride_id="ride-2", request_id="auth-app"), metadata=APP, timeout=DEADLINE
        ),
        h.payments.CaptureRidePayment(capture(), metadata=APP, timeout=DEADLINE),
        h.payments.VoidRidePayment(void(), metadata=APP, timeout=DEADLINE),
    ]
    for call in denied:
        failure = await expect_failure(call)
        assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert await calls(h, HOLD_PATH) == 1
    assert await calls(h, P2P_PATH) == 0
    await assert_nothing_moved(h, before)

    # Admin may: a second ride authorized by ops.
    ride = await do_authorize(h, ADMIN, ride_id="ride-2", request_id="auth-ops", amount_idr=10_000)
    assert ride.status == AUTHORIZED
    assert (await h.ledger())["escrow"] == HELD + 10_000
    await h.assert_books_agree()


# Capture.


async def test_capture_pays_driver_and_platform_and_refunds_the_rest(h: Harness) -> None:
    await authorized(h)
    after = await last_sequence(h)

    ride = await do_capture(h)

    assert ride.status == CAPTURED
    assert (
        ride.driver_mobile_number,
        ride.final_fare_idr,
        ride.platform_fee_idr,
        ride.driver_payout_idr,
        ride.refund_idr,
    ) == (DRIVER_E164, FARE, FEE, FARE - FEE, HELD - FARE)
    await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)
    # Three legs out of escrow, one KasPro call each, booked once each.
    assert await calls(h, P2P_PATH) == 3
    journal = {e["requestId"]: e for e in await h.sandbox_ledger()}
    legs = {
        "payout": (DRIVER, FARE - FEE),
        "fee": (CORPORATE_ACCOUNT, FEE),
        "refund": (PASSENGER, HELD - FARE),
    }
    for leg, (to, amount) in legs.items():
        entry = journal[reference(leg)]
        assert (entry["from"], entry["to"], entry["amount"]) == (ESCROW_ACCOUNT, to, amount), leg
    events = await h.events(after)
    assert ride_statuses(events) == [CAPTURING, CAPTURED]
    captures = ride_transactions(events, common_pb2.TRANSACTION_TYPE_RIDE_CAPTURE)
    assert captures[-1].status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    stored = await get_transaction(h, captures[-1].transaction_id)
    assert stored.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert (stored.ride_id, stored.counterparty_mobile_number) == (RIDE, DRIVER_E164)
    assert await get_ride(h) == ride

    # A replay answers the same, and nothing more happens at KasPro.
    before = await books(h)
    again = await do_capture(h)
    assert again == ride
    assert await calls(h, P2P_PATH) == 3
    await assert_nothing_moved(h, before)


async def test_capture_of_the_whole_hold_has_no_refund_leg(h: Harness) -> None:
    await authorized(h)

    ride = await do_capture(h, final_fare_idr=HELD)

    assert (ride.status, ride.refund_idr, ride.driver_payout_idr) == (CAPTURED, 0, HELD - FEE)
    assert await calls(h, P2P_PATH) == 2
    assert reference("refund") not in await journal_by_reference(h)
    await assert_captured_books(h, passenger=START - HELD, driver=HELD - FEE, corporate=FEE)


async def test_capture_without_a_fee_has_no_fee_leg(h: Harness) -> None:
    await authorized(h)

    ride = await do_capture(h, platform_fee_idr=0)

    assert (ride.status, ride.platform_fee_idr, ride.driver_payout_idr) == (CAPTURED, 0, FARE)
    assert await calls(h, P2P_PATH) == 2
    assert reference("fee") not in await journal_by_reference(h)
    await assert_captured_books(h, passenger=START - FARE, driver=FARE, corporate=0)


async def test_capture_twice_with_new_request_id_is_invalid_state(h: Harness) -> None:
    await authorized(h)
    await do_capture(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.CaptureRidePayment(
            capture(request_id="capture-2", final_fare_idr=30_000),
            metadata=DISPATCH,
            timeout=DEADLINE,
        )
    )

    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
    assert await calls(h, P2P_PATH) == 3
    assert (await get_ride(h)).final_fare_idr == FARE
    await assert_nothing_moved(h, before)


async def test_capture_after_void_is_invalid_state(h: Harness) -> None:
    await authorized(h)
    await do_void(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.CaptureRidePayment(capture(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
    assert await calls(h, P2P_PATH) == 1  # the void's leg only
    assert (await get_ride(h)).status == VOIDED
    await assert_nothing_moved(h, before)


async def test_final_fare_above_the_hold_is_invalid_state(h: Harness) -> None:
    await authorized(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.CaptureRidePayment(
            capture(final_fare_idr=HELD + 1), metadata=DISPATCH, timeout=DEADLINE
        )
    )

    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
    assert await calls(h, P2P_PATH) == 0
    assert (await get_ride(h)).status == AUTHORIZED
    await assert_nothing_moved(h, before)
    # The hold is intact: a correct capture still works.
    ride = await do_capture(h, request_id="capture-2")
    assert ride.status == CAPTURED


BAD_CAPTURE: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"platform_fee_idr": FARE + 1}, ("platform_fee_idr",)),
    ({"platform_fee_idr": -1}, ("platform_fee_idr",)),
    ({"final_fare_idr": 0}, ("final_fare_idr",)),
    ({"final_fare_idr": -1}, ("final_fare_idr",)),
    ({"driver": "0812"}, ("driver_mobile_number",)),
    ({"driver": ""}, ("driver_mobile_number",)),
    ({"ride_id": ""}, ("ride_id",)),
    ({"request_id": "bad id"}, ("request_id",)),
]


async def test_capture_bad_input_names_the_field(h: Harness) -> None:
    await authorized(h)
    before = await books(h)

    for n, (fields, bad) in enumerate(BAD_CAPTURE):
        request = capture(**{"request_id": f"capture-bad-{n}", **fields})
        failure = await expect_failure(
            h.payments.CaptureRidePayment(request, metadata=DISPATCH, timeout=DEADLINE)
        )
        assert (failure.code, sorted(set(failure.fields))) == (
            INVALID_ARGUMENT,
            sorted(bad),
        ), fields
        assert_failure(failure, INVALID_ARGUMENT, "INVALID_FIELD", *bad)

    assert await calls(h, P2P_PATH) == 0
    assert (await get_ride(h)).status == AUTHORIZED
    await assert_nothing_moved(h, before)
    # None of the refusals used up the hold.
    assert (await do_capture(h)).status == CAPTURED


async def test_capture_or_void_of_an_unknown_ride_is_not_found(h: Harness) -> None:
    await parties(h)
    before = await books(h)

    refused: list[Awaitable[Any]] = [
        h.payments.CaptureRidePayment(capture(), metadata=DISPATCH, timeout=DEADLINE),
        h.payments.VoidRidePayment(void(), metadata=DISPATCH, timeout=DEADLINE),
        h.payments.GetRidePayment(
            payment_service_pb2.GetRidePaymentRequest(ride_id=RIDE),
            metadata=DISPATCH,
            timeout=DEADLINE,
        ),
    ]
    for call in refused:
        failure = await expect_failure(call)
        assert_failure(failure, grpc.StatusCode.NOT_FOUND, "RIDE_PAYMENT_NOT_FOUND")
    assert await calls(h, P2P_PATH) == 0
    await assert_nothing_moved(h, before)


async def test_capture_to_an_unregistered_driver_is_customer_not_found(h: Harness) -> None:
    await h.onboard(PASSENGER, START)
    await do_authorize(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.CaptureRidePayment(capture(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    assert await calls(h, P2P_PATH) == 0
    assert (await get_ride(h)).status == AUTHORIZED
    await assert_nothing_moved(h, before)


async def test_capture_to_an_unlinked_driver_is_wallet_not_linked(h: Harness) -> None:
    # payment_service.proto, CaptureRidePayment: "FAILED_PRECONDITION /
    # WALLET_NOT_LINKED (driver)".
    await h.onboard(PASSENGER, START)
    await h.register(DRIVER, request_id="register-driver", first_name="Siti")
    await do_authorize(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.CaptureRidePayment(capture(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "WALLET_NOT_LINKED")
    assert await calls(h, P2P_PATH) == 0
    assert (await get_ride(h)).status == AUTHORIZED
    await assert_nothing_moved(h, before)


async def test_capture_over_the_drivers_balance_cap_is_refused_before_kaspro(
    h: Harness,
) -> None:
    await authorized(h)
    # A basic driver with room for less than the payout.
    await h.top_up(DRIVER, BASIC_CAP - (FARE - FEE) + 1)
    before = await books(h)

    failure = await expect_failure(
        h.payments.CaptureRidePayment(capture(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "LIMIT_EXCEEDED")
    assert await calls(h, P2P_PATH) == 0
    assert (await get_ride(h)).status == AUTHORIZED
    await assert_nothing_moved(h, before)
    # The hold is still whole and can be returned.
    assert (await do_void(h)).status == VOIDED
    await h.assert_books_agree()


async def test_concurrent_capture_and_void_resolve_the_hold_once(h: Harness) -> None:
    await authorized(h)

    captured, voided = await asyncio.gather(do_capture(h), do_void(h), return_exceptions=True)

    answers = [captured, voided]
    won = [a for a in answers if isinstance(a, common_pb2.RidePayment)]
    assert len(won) == 1, answers
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            assert_failure(failure_of(answer), FAILED_PRECONDITION, "INVALID_STATE")
    ride = await get_ride(h)
    assert ride.status == won[0].status
    if ride.status == CAPTURED:
        assert await calls(h, P2P_PATH) == 3
        await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)
    else:
        assert ride.status == VOIDED
        assert await calls(h, P2P_PATH) == 1
        assert await balance(h, PASSENGER) == START
        assert await balance(h, "escrow") == 0
        await h.assert_books_agree()


async def test_concurrent_captures_capture_once_and_the_loser_is_answered_its_refusal_again(
    h: Harness,
) -> None:
    await authorized(h)

    answers = await asyncio.gather(
        *(do_capture(h, request_id=f"capture-{n}") for n in range(4)), return_exceptions=True
    )

    won = [a for a in answers if isinstance(a, common_pb2.RidePayment)]
    lost = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(won) == 1, answers
    assert won[0].status == CAPTURED
    for error in lost:
        assert_failure(failure_of(error), FAILED_PRECONDITION, "INVALID_STATE")
    assert await calls(h, P2P_PATH) == 3
    await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)
    # Each refused request was decided: its retry repeats the refusal (rule 1), it is
    # not "still running".
    for n, answer in enumerate(answers):
        if isinstance(answer, grpc.aio.AioRpcError):
            retry = await expect_failure(do_capture(h, request_id=f"capture-{n}"))
            assert_failure(retry, FAILED_PRECONDITION, "INVALID_STATE")


async def test_a_frozen_capture_sends_none_of_its_remaining_legs(h: Harness) -> None:
    """KasPro refuses the payout out of escrow (it should not: escrow holds the money), so
    the capture is frozen; the fee and refund legs are not sent, now or later."""
    await authorized(h)
    await h.control("POST", f"/wallets/{ESCROW_ACCOUNT}/balance", json={"balance": 0})

    await h.payments.CaptureRidePayment(
        capture(final_fare_idr=FARE, platform_fee_idr=FEE), metadata=DISPATCH, timeout=DEADLINE
    )
    row = await h.running.db.fetch_one("SELECT id FROM transactions WHERE type = 'RIDE_CAPTURE'")
    assert row is not None
    assert await frozen(h, row["id"])
    assert (await get_ride(h)).status == common_pb2.RIDE_PAYMENT_STATUS_CAPTURING
    for _ in range(3):  # reconciler passes, a frozen poll apart
        await h.settle(advance_seconds=Timing().frozen_poll_seconds)

    sent = [e["requestId"] for e in await h.kaspro_requests(P2P_PATH)]
    assert sent == [reference("payout")], sent


# Void.


async def test_void_returns_the_whole_hold(h: Harness) -> None:
    await authorized(h)
    after = await last_sequence(h)

    ride = await do_void(h)

    assert (ride.status, ride.refund_idr, ride.reason) == (VOIDED, HELD, "cancelled by passenger")
    assert await balance(h, PASSENGER) == START
    assert await balance(h, "escrow") == 0
    assert (await h.ledger()).get("escrow", 0) == 0
    await h.assert_books_agree()
    assert await calls(h, P2P_PATH) == 1
    [entry] = [e for e in await h.sandbox_ledger() if e["requestId"] == reference("void")]
    assert (entry["from"], entry["to"], entry["amount"]) == (ESCROW_ACCOUNT, PASSENGER, HELD)
    events = await h.events(after)
    assert ride_statuses(events) == [VOIDING, VOIDED]
    voids = ride_transactions(events, common_pb2.TRANSACTION_TYPE_RIDE_VOID)
    assert voids[-1].status == common_pb2.TRANSACTION_STATUS_SUCCEEDED

    # A replay answers the same; a new void request is refused; nothing moves.
    before = await books(h)
    assert await do_void(h) == ride
    failure = await expect_failure(
        h.payments.VoidRidePayment(void(request_id="void-2"), metadata=DISPATCH, timeout=DEADLINE)
    )
    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
    assert await calls(h, P2P_PATH) == 1
    await assert_nothing_moved(h, before)


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"ride_id": ""}, "ride_id"),
        ({"reason": "x" * 201}, "reason"),
        ({"request_id": "bad id"}, "request_id"),
    ],
)
async def test_void_bad_input_names_the_field(h: Harness, fields: dict[str, Any], bad: str) -> None:
    await authorized(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.VoidRidePayment(void(**fields), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, INVALID_ARGUMENT, "INVALID_FIELD", bad)
    assert await calls(h, P2P_PATH) == 0
    assert (await get_ride(h)).status == AUTHORIZED
    await assert_nothing_moved(h, before)


async def test_void_after_capture_is_invalid_state(h: Harness) -> None:
    await authorized(h)
    await do_capture(h)
    before = await books(h)

    failure = await expect_failure(
        h.payments.VoidRidePayment(void(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
    assert (await get_ride(h)).status == CAPTURED
    assert await calls(h, P2P_PATH) == 3
    await assert_nothing_moved(h, before)


# Expiry.


async def test_sweeper_returns_a_hold_past_its_lifetime(h: Harness) -> None:
    await h.restart(
        h.with_config(limits=dataclasses.replace(h.config.limits, hold_lifetime_seconds=60))
    )
    ride = await authorized(h)
    assert ride.expire_time.ToSeconds() - ride.create_time.ToSeconds() in (59, 60, 61)

    # Within its lifetime the sweeper leaves it alone.
    await h.settle(advance_seconds=30)
    assert (await get_ride(h)).status == AUTHORIZED
    assert await calls(h, P2P_PATH) == 0
    assert (await h.ledger())["escrow"] == HELD

    after = await last_sequence(h)
    await h.settle(advance_seconds=120)

    expired = await get_ride(h)
    assert (expired.status, expired.refund_idr) == (EXPIRED, HELD)
    assert expired.reason
    assert await balance(h, PASSENGER) == START
    assert await balance(h, "escrow") == 0
    assert (await h.ledger()).get("escrow", 0) == 0
    await h.assert_books_agree()
    assert await calls(h, P2P_PATH) == 1
    assert ride_statuses(await h.events(after)) == [VOIDING, EXPIRED]

    # An expired hold resolves once: no capture, no void, no second sweep.
    before = await books(h)
    refused: list[Awaitable[Any]] = [
        h.payments.CaptureRidePayment(capture(), metadata=DISPATCH, timeout=DEADLINE),
        h.payments.VoidRidePayment(void(), metadata=DISPATCH, timeout=DEADLINE),
    ]
    for call in refused:
        assert_failure(await expect_failure(call), FAILED_PRECONDITION, "INVALID_STATE")
    await h.settle(advance_seconds=120)
    assert (await get_ride(h)).status == EXPIRED
    assert await calls(h, P2P_PATH) == 1
    await assert_nothing_moved(h, before)


async def test_hold_within_default_lifetime_is_not_swept(h: Harness) -> None:
    await authorized(h)

    await h.settle(advance_seconds=3600)

    assert (await get_ride(h)).status == AUTHORIZED
    assert await calls(h, P2P_PATH) == 0
    assert (await h.ledger())["escrow"] == HELD
    await h.assert_books_agree()
    assert (await do_capture(h)).status == CAPTURED


# Outcome unknown and crashes.


async def test_hold_with_lost_answer_is_settled_by_status_inquiry(h: Harness) -> None:
    await parties(h)
    # The short KasPro timeout only once set up: onboarding at 0.3 s fails on a loaded machine.
    await h.restart(h.with_config(kaspro_timeout_seconds=SHORT_TIMEOUT))
    # KasPro executes the payment, then answers after our timeout.
    await h.arm_fault(HOLD_PATH, "delay", delay_seconds=DELAY)
    faulted_at = asyncio.get_running_loop().time()

    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(authorize(), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert failure.error_metadata.get("transaction_id")
    assert (await get_ride(h)).status == AUTHORIZING
    # The money did move at KasPro; we have not booked it yet (outcome unknown).
    assert await balance(h, PASSENGER) == START - HELD
    assert await balance(h, "escrow") == HELD
    assert (await h.ledger()).get("escrow", 0) == 0
    # A retry while it is unknown says so again, and sends nothing.
    retry = await expect_failure(
        h.payments.AuthorizeRidePayment(authorize(), metadata=DISPATCH, timeout=DEADLINE)
    )
    assert_failure(retry, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert await calls(h, HOLD_PATH) == 1

    await h.settle()

    assert (await get_ride(h)).status == AUTHORIZED
    assert await calls(h, HOLD_PATH) == 1
    assert (await journal_by_reference(h))[reference("hold")] == 1
    assert (await h.ledger())["escrow"] == HELD
    await h.assert_books_agree()
    replay = await do_authorize(h)
    assert (replay.ride_id, replay.status) == (RIDE, AUTHORIZED)
    assert await calls(h, HOLD_PATH) == 1
    await delayed_answer_sent(faulted_at)


async def test_refused_hold_with_lost_answer_fails_the_ride_after_inquiry(h: Harness) -> None:
    await parties(h, passenger_balance=10_000)
    # The short KasPro timeout only once set up: onboarding at 0.3 s fails on a loaded machine.
    await h.restart(h.with_config(kaspro_timeout_seconds=SHORT_TIMEOUT))
    before = await books(h)
    # KasPro refuses the payment (insufficient balance), but the answer is lost.
    await h.arm_fault(HOLD_PATH, "delay", delay_seconds=DELAY)
    faulted_at = asyncio.get_running_loop().time()

    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(authorize(), metadata=DISPATCH, timeout=DEADLINE)
    )
    assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert (await get_ride(h)).status == AUTHORIZING

    await h.settle()

    assert (await get_ride(h)).status == FAILED
    assert await calls(h, HOLD_PATH) == 1
    await assert_nothing_moved(h, before)
    replay = await expect_failure(
        h.payments.AuthorizeRidePayment(authorize(), metadata=DISPATCH, timeout=DEADLINE)
    )
    # The same refusal as when KasPro's answer arrives in time (see the test above):
    # KasPro's status of the hold says why it failed.
    [hold] = [t for t in await h.sandbox_transactions() if t["requestId"] == reference("hold")]
    assert (hold["status"], hold["message"]) == ("FAILED", "Insufficient balance")
    assert await calls(h, HOLD_PATH) == 1
    await delayed_answer_sent(faulted_at)
    assert_failure(replay, FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")


async def test_expiry_whose_answer_is_lost_ends_expired_on_the_next_pass(h: Harness) -> None:
    await h.restart(
        h.with_config(
            kaspro_timeout_seconds=SHORT_TIMEOUT,
            limits=dataclasses.replace(h.config.limits, hold_lifetime_seconds=60),
        )
    )
    await authorized(h)
    await h.arm_fault(P2P_PATH, "delay", delay_seconds=DELAY)
    faulted_at = asyncio.get_running_loop().time()

    await h.settle(advance_seconds=120)

    assert (await get_ride(h)).status == VOIDING
    # Nothing else can start on a hold that is being returned.
    failure = await expect_failure(
        h.payments.CaptureRidePayment(capture(), metadata=DISPATCH, timeout=DEADLINE)
    )
    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")

    ride = await settle_until(h, EXPIRED)

    assert ride.status == EXPIRED
    assert (await journal_by_reference(h))[reference("void")] == 1
    assert await calls(h, P2P_PATH) == 1
    assert await balance(h, PASSENGER) == START
    assert (await h.ledger()).get("escrow", 0) == 0
    await h.assert_books_agree()
    await delayed_answer_sent(faulted_at)


async def test_crash_during_authorize_is_finished_by_the_reconciler(h: Harness) -> None:
    await parties(h)
    # KasPro executes the payment and hangs; the process dies before the answer.
    await h.arm_fault(HOLD_PATH, "delay", delay_seconds=DELAY)
    faulted_at = asyncio.get_running_loop().time()
    in_flight = asyncio.create_task(do_authorize(h))

    async def hold_executed() -> bool:
        return reference("hold") in await journal_by_reference(h)

    await wait_for(hold_executed)
    await h.restart()
    with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
        await in_flight

    ride = await settle_until(h, AUTHORIZED)

    assert ride.status == AUTHORIZED
    assert await calls(h, HOLD_PATH) == 1
    assert (await h.ledger())["escrow"] == HELD
    await h.assert_books_agree()
    # The caller's retry reports the hold (once the dead request's lease is over, if
    # not before) and never starts a second one.
    h.clock.advance(3600)
    replay = await do_authorize(h)
    assert (replay.ride_id, replay.status) == (RIDE, AUTHORIZED)
    assert await calls(h, HOLD_PATH) == 1
    assert (await do_capture(h)).status == CAPTURED
    await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)
    await delayed_answer_sent(faulted_at)


async def test_restart_between_authorize_and_capture(h: Harness) -> None:
    await authorized(h)

    await h.restart()

    assert (await get_ride(h)).status == AUTHORIZED
    ride = await do_capture(h)
    assert ride.status == CAPTURED
    await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)
    assert await calls(h, P2P_PATH) == 3


async def test_capture_leg_with_lost_answer_resumes_after_a_crash(h: Harness) -> None:
    await authorized(h)
    # The short KasPro timeout only once set up: onboarding at 0.3 s fails on a loaded machine.
    await h.restart(h.with_config(kaspro_timeout_seconds=SHORT_TIMEOUT))
    # The first leg executes at KasPro, but its answer comes after our timeout.
    await h.arm_fault(P2P_PATH, "delay", times=1, delay_seconds=DELAY)
    faulted_at = asyncio.get_running_loop().time()

    try:
        ride = await do_capture(h)
    except grpc.aio.AioRpcError as error:
        assert_failure(failure_of(error), grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    else:
        assert ride.status == CAPTURING
    assert (await get_ride(h)).status == CAPTURING

    await h.restart()  # a new process on the same database, as after a crash
    ride = await settle_until(h, CAPTURED)

    assert ride.status == CAPTURED
    assert_each_leg_once(await journal_by_reference(h), ("payout", "fee", "refund"))
    sent = Counter(r["requestId"] for r in await h.kaspro_requests(P2P_PATH))
    assert sent[reference("payout")] == 1  # asked about, never sent again
    await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)
    replay = await do_capture(h)
    assert replay.status == CAPTURED
    await delayed_answer_sent(faulted_at)


async def test_capture_leg_never_executed_is_sent_again_with_the_same_reference(
    h: Harness,
) -> None:
    await authorized(h)
    # KasPro answers 500 without executing the first leg.
    await h.arm_fault(P2P_PATH, "http_500", times=1)

    try:
        ride = await do_capture(h)
    except grpc.aio.AioRpcError as error:
        assert_failure(failure_of(error), grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    else:
        assert ride.status == CAPTURING
    assert (await get_ride(h)).status == CAPTURING
    assert (await journal_by_reference(h))[reference("payout")] == 0
    ledger = await h.ledger()
    assert ledger.get("escrow", 0) == FARE - FEE  # the unpaid leg is still in escrow

    ride = await settle_until(h, CAPTURED)

    assert ride.status == CAPTURED
    assert_each_leg_once(await journal_by_reference(h), ("payout", "fee", "refund"))
    sent = Counter(r["requestId"] for r in await h.kaspro_requests(P2P_PATH))
    assert sent[reference("payout")] == 2  # the faulted try, then the same reference again
    await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)


async def test_crash_in_the_middle_of_a_capture_resumes_the_missing_legs(h: Harness) -> None:
    await authorized(h)
    # The first leg executes and then hangs; the process dies before the other legs go.
    await h.arm_fault(P2P_PATH, "delay", times=1, delay_seconds=DELAY)
    faulted_at = asyncio.get_running_loop().time()
    in_flight = asyncio.create_task(do_capture(h))

    async def first_leg_executed() -> bool:
        return reference("payout") in await journal_by_reference(h)

    await wait_for(first_leg_executed)
    await h.restart()
    # The old process's channel is gone: the caller sees its call end without an answer.
    with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
        await in_flight
    assert (await journal_by_reference(h))[reference("fee")] == 0

    ride = await settle_until(h, CAPTURED)

    assert ride.status == CAPTURED
    assert_each_leg_once(await journal_by_reference(h), ("payout", "fee", "refund"))
    await assert_captured_books(h, passenger=START - FARE, driver=FARE - FEE, corporate=FEE)
    # The caller's retry after the crash reports the finished capture.
    assert (await do_capture(h)).status == CAPTURED
    assert (await journal_by_reference(h))[reference("payout")] == 1
    await delayed_answer_sent(faulted_at)


# Events.


async def test_event_stream_of_a_ride_is_ordered_without_gaps_and_resumable(h: Harness) -> None:
    await authorized(h)
    await do_capture(h)

    events = await h.events()

    assert ride_statuses(events) == [AUTHORIZING, AUTHORIZED, CAPTURING, CAPTURED]
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    for event in events:
        if event.type == common_pb2.EVENT_TYPE_RIDE_PAYMENT_UPDATED:
            assert event.ride_payment.held_amount_idr == HELD
    captured = next(e for e in events if e.ride_payment.status == CAPTURED)
    assert captured.ride_payment.driver_payout_idr == FARE - FEE

    # Resuming from a sequence in the middle gives exactly what came after it.
    middle = len(events) // 2
    resumed = await h.events(events[middle - 1].sequence)
    assert [(e.sequence, e.event_id) for e in resumed] == [
        (e.sequence, e.event_id) for e in events[middle:]
    ]


async def test_a_frozen_hold_is_neither_captured_voided_nor_expired(h: Harness) -> None:
    """KasPro says the hold failed after it had said it succeeded: the hold is frozen, and
    money KasPro may never have moved into escrow is not paid out of it — by a capture, a
    void or the sweeper — until an operator resolved it."""
    await h.restart(
        h.with_config(limits=dataclasses.replace(h.config.limits, hold_lifetime_seconds=60))
    )
    await authorized(h)
    row = await h.running.db.fetch_one(
        "SELECT hold_transaction FROM ride_payments WHERE ride_id = ?", (RIDE,)
    )
    assert row is not None
    raw = body(reference("hold"), "OLSFQ9", "FAILED", amount=str(HELD), mobile=PASSENGER)
    assert (await post(h, raw)).status_code == 200
    assert await frozen(h, str(row["hold_transaction"]))
    before = await books(h)

    for call in (do_capture(h), do_void(h)):
        failure = await expect_failure(call)
        assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
        assert "frozen" in failure.message
    await h.settle(advance_seconds=120)  # past its lifetime: the sweeper leaves it

    assert (await get_ride(h)).status == AUTHORIZED
    assert await calls(h, P2P_PATH) == 0
    assert await books(h) == before

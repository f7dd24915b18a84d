"""TipDriver: a tip goes from the passenger to the driver of a captured ride, once.

Caps (the tip cap and the driver's balance cap) are checked before KasPro moves any
money; every refusal leaves both sets of books as they were.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import grpc
import pytest
from wallet.v1 import common_pb2, payment_service_pb2, transaction_service_pb2

from .conftest import (
    ADMIN,
    APP,
    DEADLINE,
    DISPATCH,
    LOCAL,
    OTHER_LOCAL,
    Harness,
    assert_failure,
    expect_failure,
)
from .helpers import last_sequence

PASSENGER = LOCAL
DRIVER = OTHER_LOCAL
PASSENGER_E164 = "+6281234567890"
DRIVER_E164 = "+6285712345678"
P2P_PATH = "/p2p-transaction/"
INQUIRY_PATH = "/customer-account-inquiry/"

RIDE = "ride-1"
HELD = 50_000
FARE = 42_000
FEE = 8_000
START = 300_000
# After the capture: the passenger paid the fare, the driver got fare - fee.
PASSENGER_AFTER_RIDE = START - FARE
DRIVER_AFTER_RIDE = FARE - FEE
BASIC_CAP = 2_000_000

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def tip(
    amount_idr: int = 10_000, *, request_id: str = "tip-1", ride_id: str = RIDE
) -> payment_service_pb2.TipDriverRequest:
    return payment_service_pb2.TipDriverRequest(
        request_id=request_id, ride_id=ride_id, amount_idr=amount_idr
    )


async def do_tip(h: Harness, amount_idr: int = 10_000, **fields: Any) -> common_pb2.Transaction:
    response = await h.payments.TipDriver(
        tip(amount_idr, **fields), metadata=DISPATCH, timeout=DEADLINE
    )
    return response.transaction


async def authorized_ride(h: Harness, passenger_balance: int = START) -> None:
    await h.onboard(PASSENGER, passenger_balance)
    await h.onboard(DRIVER, name="Siti")
    response = await h.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="auth-1",
            ride_id=RIDE,
            passenger_mobile_number=PASSENGER,
            amount_idr=HELD,
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    assert response.ride_payment.status == common_pb2.RIDE_PAYMENT_STATUS_AUTHORIZED


async def captured_ride(h: Harness, passenger_balance: int = START) -> None:
    await authorized_ride(h, passenger_balance)
    response = await h.payments.CaptureRidePayment(
        payment_service_pb2.CaptureRidePaymentRequest(
            request_id="capture-1",
            ride_id=RIDE,
            final_fare_idr=FARE,
            driver_mobile_number=DRIVER,
            platform_fee_idr=FEE,
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    assert response.ride_payment.status == common_pb2.RIDE_PAYMENT_STATUS_CAPTURED


async def wallets(h: Harness) -> tuple[int, int]:
    """The passenger's and the driver's balances at KasPro."""
    subscribers = (await h.sandbox_balances())["subscribers"]
    return int(subscribers[PASSENGER]), int(subscribers[DRIVER])


async def books(h: Harness) -> tuple[dict[str, Any], int, dict[str, int]]:
    """Both sets of books: sandbox balances, the sandbox journal's length, our ledger."""
    return await h.sandbox_balances(), len(await h.sandbox_ledger()), await h.ledger()


async def assert_nothing_moved(h: Harness, before: tuple[Any, ...]) -> None:
    assert await books(h) == before
    await h.assert_books_agree()


async def p2p_calls(h: Harness) -> int:
    return len(await h.kaspro_requests(P2P_PATH))


async def test_tip_pays_the_driver_of_the_captured_ride(h: Harness) -> None:
    await captured_ride(h)
    after = await last_sequence(h)
    sent_before = await p2p_calls(h)

    t = await do_tip(h, 10_000)

    assert t.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert t.type == common_pb2.TRANSACTION_TYPE_TIP
    assert (t.amount_idr, t.ride_id, t.mobile_number, t.counterparty_mobile_number) == (
        10_000,
        RIDE,
        PASSENGER_E164,
        DRIVER_E164,
    )
    assert await wallets(h) == (PASSENGER_AFTER_RIDE - 10_000, DRIVER_AFTER_RIDE + 10_000)
    ledger = await h.ledger()
    assert ledger["subscriber:6281234567890"] == PASSENGER_AFTER_RIDE - 10_000
    assert ledger["subscriber:6285712345678"] == DRIVER_AFTER_RIDE + 10_000
    assert ledger.get("escrow", 0) == 0
    await h.assert_books_agree()
    assert await p2p_calls(h) == sent_before + 1
    [entry] = [e for e in await h.sandbox_ledger() if e["from"] == PASSENGER and e["to"] == DRIVER]
    assert (entry["type"], entry["amount"]) == ("P2P", 10_000)
    stored = await h.transactions.GetTransaction(
        transaction_service_pb2.GetTransactionRequest(transaction_id=t.transaction_id),
        metadata=ADMIN,
        timeout=DEADLINE,
    )
    assert stored.transaction == t
    events = await h.events(after)
    assert [
        e.transaction.status for e in events if e.transaction.transaction_id == t.transaction_id
    ] == [common_pb2.TRANSACTION_STATUS_PENDING, common_pb2.TRANSACTION_STATUS_SUCCEEDED]

    # A replay answers the same transaction and KasPro is not called again.
    before = await books(h)
    again = await do_tip(h, 10_000)
    assert again.transaction_id == t.transaction_id
    assert again.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert await p2p_calls(h) == sent_before + 1
    await assert_nothing_moved(h, before)

    # The same request_id for another tip is refused.
    failure = await expect_failure(
        h.payments.TipDriver(tip(20_000), metadata=DISPATCH, timeout=DEADLINE)
    )
    assert_failure(failure, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await p2p_calls(h) == sent_before + 1
    await assert_nothing_moved(h, before)


async def test_tip_on_an_authorized_ride_is_invalid_state(h: Harness) -> None:
    await authorized_ride(h)
    before = await books(h)

    failure = await expect_failure(h.payments.TipDriver(tip(), metadata=DISPATCH, timeout=DEADLINE))

    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
    assert await p2p_calls(h) == 0
    await assert_nothing_moved(h, before)


async def test_tip_on_a_voided_ride_is_invalid_state(h: Harness) -> None:
    await authorized_ride(h)
    await h.payments.VoidRidePayment(
        payment_service_pb2.VoidRidePaymentRequest(request_id="void-1", ride_id=RIDE),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    before = await books(h)

    failure = await expect_failure(h.payments.TipDriver(tip(), metadata=DISPATCH, timeout=DEADLINE))

    assert_failure(failure, FAILED_PRECONDITION, "INVALID_STATE")
    assert await p2p_calls(h) == 1  # the void's leg only
    await assert_nothing_moved(h, before)


async def test_tip_on_an_unknown_ride_is_not_found(h: Harness) -> None:
    await captured_ride(h)
    before = await books(h)
    sent = await p2p_calls(h)

    failure = await expect_failure(
        h.payments.TipDriver(tip(ride_id="ride-unknown"), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "RIDE_PAYMENT_NOT_FOUND")
    assert await p2p_calls(h) == sent
    await assert_nothing_moved(h, before)


async def test_default_tip_cap_is_100000(h: Harness) -> None:
    await captured_ride(h)
    before = await books(h)
    sent = await p2p_calls(h)

    failure = await expect_failure(
        h.payments.TipDriver(tip(100_001), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "LIMIT_EXCEEDED")
    assert await p2p_calls(h) == sent
    await assert_nothing_moved(h, before)
    # The cap itself is allowed.
    t = await do_tip(h, 100_000, request_id="tip-2")
    assert t.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert await wallets(h) == (PASSENGER_AFTER_RIDE - 100_000, DRIVER_AFTER_RIDE + 100_000)
    await h.assert_books_agree()


async def test_tip_cap_is_configurable(h: Harness) -> None:
    await h.restart(h.with_config(limits=dataclasses.replace(h.config.limits, tip_cap_idr=5_000)))
    await captured_ride(h)
    before = await books(h)
    sent = await p2p_calls(h)

    failure = await expect_failure(
        h.payments.TipDriver(tip(5_001), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "LIMIT_EXCEEDED")
    assert await p2p_calls(h) == sent
    await assert_nothing_moved(h, before)
    t = await do_tip(h, 5_000, request_id="tip-2")
    assert t.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert await wallets(h) == (PASSENGER_AFTER_RIDE - 5_000, DRIVER_AFTER_RIDE + 5_000)
    await h.assert_books_agree()


async def test_tip_above_the_passengers_balance_is_insufficient_funds(h: Harness) -> None:
    # 60,000 in, 42,000 fare: 18,000 left after the ride.
    await captured_ride(h, passenger_balance=60_000)
    before = await books(h)

    failure = await expect_failure(
        h.payments.TipDriver(tip(20_000), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    await assert_nothing_moved(h, before)
    assert await wallets(h) == (18_000, DRIVER_AFTER_RIDE)
    # Its replay repeats the refusal without asking KasPro again.
    sent = await p2p_calls(h)
    again = await expect_failure(
        h.payments.TipDriver(tip(20_000), metadata=DISPATCH, timeout=DEADLINE)
    )
    assert_failure(again, FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await p2p_calls(h) == sent
    await assert_nothing_moved(h, before)


async def test_tip_over_the_drivers_balance_cap_is_refused_before_kaspro(h: Harness) -> None:
    await captured_ride(h)
    # A basic driver 5,000 below the cap.
    await h.top_up(DRIVER, BASIC_CAP - DRIVER_AFTER_RIDE - 5_000)
    before = await books(h)
    sent = await p2p_calls(h)

    failure = await expect_failure(
        h.payments.TipDriver(tip(5_001), metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, FAILED_PRECONDITION, "LIMIT_EXCEEDED")
    assert await p2p_calls(h) == sent  # refused by us, not by KasPro
    await assert_nothing_moved(h, before)
    # A tip that fills the wallet exactly to its cap goes through.
    t = await do_tip(h, 5_000, request_id="tip-2")
    assert t.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert (await wallets(h))[1] == BASIC_CAP
    await h.assert_books_agree()


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"amount_idr": 0}, "amount_idr"),
        ({"amount_idr": -1_000}, "amount_idr"),
        ({"ride_id": ""}, "ride_id"),
        ({"request_id": ""}, "request_id"),
    ],
)
async def test_tip_bad_input_names_the_field(h: Harness, fields: dict[str, Any], bad: str) -> None:
    await captured_ride(h)
    before = await books(h)
    sent = await p2p_calls(h)
    values: dict[str, Any] = {"amount_idr": 10_000, "request_id": "tip-1", "ride_id": RIDE}
    values.update(fields)

    failure = await expect_failure(
        h.payments.TipDriver(
            payment_service_pb2.TipDriverRequest(**values), metadata=DISPATCH, timeout=DEADLINE
        )
    )

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", bad)
    assert await p2p_calls(h) == sent
    await assert_nothing_moved(h, before)


async def test_only_dispatch_and_admin_may_tip(h: Harness) -> None:
    await captured_ride(h)
    before = await books(h)
    sent = await p2p_calls(h)

    failure = await expect_failure(h.payments.TipDriver(tip(), metadata=APP, timeout=DEADLINE))

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert await p2p_calls(h) == sent
    await assert_nothing_moved(h, before)
    response = await h.payments.TipDriver(tip(), metadata=ADMIN, timeout=DEADLINE)
    assert response.transaction.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    await h.assert_books_agree()


async def test_tip_with_a_lost_answer_is_settled_by_status_inquiry(h: Harness) -> None:
    await captured_ride(h)
    # The short KasPro timeout only once set up: onboarding at 0.3 s fails on a loaded machine.
    await h.restart(h.with_config(kaspro_timeout_seconds=0.3))
    sent = await p2p_calls(h)
    await h.arm_fault(P2P_PATH, "delay", delay_seconds=1.0)
    faulted_at = asyncio.get_running_loop().time()

    failure = await expect_failure(h.payments.TipDriver(tip(), metadata=DISPATCH, timeout=DEADLINE))

    assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    transaction_id = failure.error_metadata["transaction_id"]
    # KasPro moved it; we keep it PROCESSING until KasPro says how it ended.
    assert await wallets(h) == (PASSENGER_AFTER_RIDE - 10_000, DRIVER_AFTER_RIDE + 10_000)

    await h.settle()

    stored = await h.transactions.GetTransaction(
        transaction_service_pb2.GetTransactionRequest(transaction_id=transaction_id),
        metadata=ADMIN,
        timeout=DEADLINE,
    )
    assert stored.transaction.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert await p2p_calls(h) == sent + 1
    await h.assert_books_agree()
    replay = await do_tip(h)
    assert replay.transaction_id == transaction_id
    assert await p2p_calls(h) == sent + 1
    # Let the sandbox finish its late answer before the test ends.
    remaining = faulted_at + 1.1 - asyncio.get_running_loop().time()
    if remaining > 0:
        await asyncio.sleep(remaining)

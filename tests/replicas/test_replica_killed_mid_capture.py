"""A replica SIGKILLed while KasPro holds the answer to its capture's first leg: another
replica finishes the capture exactly once (MONEY-RULES rules 3 and 7)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from wallet.v1 import common_pb2, payment_service_pb2

from .harness import DEADLINE, DISPATCH, P2P_PATH, Cluster, Failure, outcome, until

PASSENGER, DRIVER = "081234567890", "085712345678"
# The capture's legs out of escrow: driver payout, platform fee, refund to the passenger.
HELD, FARE, FEE = 50_000, 42_000, 8_000
PAYOUT, REFUND = FARE - FEE, HELD - FARE

# KasPro calls end after 3 s, so an unanswered leg is asked about after 4 s.
SETTINGS = {"WALLET_KASPRO_TIMEOUT_SECONDS": "3", "WALLET_RECONCILE_GRACE_SECONDS": "4"}


def capture(ride_id: str) -> payment_service_pb2.CaptureRidePaymentRequest:
    return payment_service_pb2.CaptureRidePaymentRequest(
        request_id=f"capture-{ride_id}",
        ride_id=ride_id,
        final_fare_idr=FARE,
        driver_mobile_number=DRIVER,
        platform_fee_idr=FEE,
    )


async def test_another_replica_finishes_a_capture_whose_replica_was_killed(
    stack: Cluster,
) -> None:
    survivor, doomed = await stack.start_replicas(2, **SETTINGS)
    await stack.onboard(survivor, PASSENGER, 100_000)
    await stack.onboard(survivor, DRIVER)
    await survivor.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="authorize-ride-1",
            ride_id="ride-1",
            passenger_mobile_number=PASSENGER,
            amount_idr=HELD,
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    # The first leg's P2P is carried out as it arrives; its answer is held back.
    await stack.control(
        "POST",
        "/faults",
        json={"path": P2P_PATH, "kind": "latency", "delaySeconds": 60, "times": 1},
    )

    cut = asyncio.create_task(
        outcome(doomed.payments.CaptureRidePayment(capture("ride-1"), metadata=DISPATCH))
    )

    async def payout_sent() -> bool:
        return len(await stack.kaspro_requests(P2P_PATH)) == 1

    await until(payout_sent)
    doomed.kill()
    assert (await cut).code == grpc.StatusCode.UNAVAILABLE

    async def captured() -> bool:
        ride = await survivor.ride("ride-1")
        return ride.status == common_pb2.RIDE_PAYMENT_STATUS_CAPTURED

    await until(captured)

    # The dispatcher retries at the survivor: it reports on the capture the dead replica
    # started (or, while that request's key is still leased, says it runs).
    retried = await outcome(
        survivor.payments.CaptureRidePayment(capture("ride-1"), metadata=DISPATCH, timeout=10)
    )
    if isinstance(retried, Failure):
        assert retried == Failure(grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")
    else:
        assert retried.ride_payment.status == common_pb2.RIDE_PAYMENT_STATUS_CAPTURED

    # Each leg reached KasPro once: the payout was found by inquiry, never sent again.
    sent = Counter(entry["requestId"] for entry in await stack.kaspro_requests(P2P_PATH))
    assert sorted(sent.values()) == [1, 1, 1], sent
    legs = [t for t in await stack.control("GET", "/transactions") if t["requestId"] in sent]
    assert sorted(t["amount"] for t in legs) == sorted([PAYOUT, FEE, REFUND])
    assert {t["status"] for t in legs} == {"SUCCESS"}
    balances = await stack.control("GET", "/balances")
    assert balances["subscribers"][DRIVER] == PAYOUT
    assert balances["subscribers"][PASSENGER] == 100_000 - FARE
    assert balances["platform"]["escrow"] == 0
    assert balances["platform"]["corporate"] == FEE
    await stack.assert_books_agree()

    ride = await survivor.ride("ride-1")
    assert (ride.driver_payout_idr, ride.platform_fee_idr, ride.refund_idr) == (
        PAYOUT,
        FEE,
        REFUND,
    )

"""`/metrics` after the README's two walkthroughs: every family of docs/operations.md
("Metrics and alerts") is served and moved, with bounded labels; and the refusals for
overload, a KasPro timeout and the shared gauges, each read back from the scrape.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
from metric_labels import FAMILIES, families, suspicious_labels, value
from prometheus_client.metrics_core import Metric
from wallet.v1 import (
    account_service_pb2,
    funding_service_pb2,
    payment_service_pb2,
    transaction_service_pb2,
)

from wallet_service.store.drifts import DriftKind, record_drift

from .conftest import (
    APP,
    CANONICAL,
    DEADLINE,
    DISPATCH,
    ID_CARD_JPEG,
    LOCAL,
    OTHER_LOCAL,
    SELFIE_JPEG,
    SELFIE_WITH_ID_CARD_JPEG,
    Harness,
    assert_failure,
    expect_failure,
    wait_for,
)
from .helpers import SUCCEEDED, bank, settled

PASSENGER, DRIVER = LOCAL, OTHER_LOCAL
P2P_PATH = "/p2p-transaction/"
INQUIRY_PATH = "/customer-account-inquiry/"
ACCOUNT = "wallet.v1.AccountService"
PAYMENT = "wallet.v1.PaymentService"
TRANSACTION = "wallet.v1.TransactionService"


async def scrape(h: Harness) -> dict[str, Metric]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{h.running.http_port}/metrics")
    assert response.status_code == 200
    return families(response.text)


def calls(found: dict[str, Metric], service: str, method: str, code: str = "OK") -> float:
    return value(found, "wallet_grpc_calls", service=service, method=method, code=code)


async def onboarding_walkthrough(h: Harness, mobile: str, name: str) -> None:
    """README, "Walkthrough: onboard a customer": register, OTP, eKYC, read."""
    await h.register(mobile, request_id=f"reg-{name}", first_name=name)
    await h.request_otp(mobile)
    await h.verify_otp(await h.otp(mobile), mobile)
    await h.accounts.UpgradeKyc(
        account_service_pb2.UpgradeKycRequest(
            request_id=f"kyc-{name}",
            mobile_number=mobile,
            id_card_image=ID_CARD_JPEG,
            selfie_image=SELFIE_JPEG,
            selfie_with_id_card_image=SELFIE_WITH_ID_CARD_JPEG,
        ),
        metadata=APP,
        timeout=DEADLINE,
    )
    await h.get_account(mobile)
    await h.accounts.CheckFunds(
        account_service_pb2.CheckFundsRequest(mobile_number=mobile, amount_idr=10_000),
        metadata=APP,
        timeout=DEADLINE,
    )


async def test_every_family_is_served_and_moved_by_the_walkthroughs(h: Harness) -> None:
    before = await scrape(h)
    for name in FAMILIES:
        assert name in before, name
    assert value(before, "wallet_serving") == 1
    assert calls(before, PAYMENT, "CaptureRidePayment", "UNAVAILABLE") == 0  # known at start

    await onboarding_walkthrough(h, PASSENGER, "Budi")
    await onboarding_walkthrough(h, DRIVER, "Siti")
    # The ride walkthrough: top-up instructions, a VA payment, a hold...
    await h.funding.GetTopUpInstructions(
        funding_service_pb2.GetTopUpInstructionsRequest(mobile_number=PASSENGER),
        metadata=APP,
        timeout=DEADLINE,
    )
    top_up = await h.top_up(PASSENGER, 150_000)
    await h.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="auth-1",
            ride_id="ride-1",
            passenger_mobile_number=PASSENGER,
            amount_idr=50_000,
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    during_ride = await scrape(h)
    # ...and a stream open while the ride goes on.
    stream = h.transactions.WatchEvents(
        transaction_service_pb2.WatchEventsRequest(after_sequence=0),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    assert isinstance(await stream.read(), transaction_service_pb2.WatchEventsResponse)
    watching = await scrape(h)
    capture = payment_service_pb2.CaptureRidePaymentRequest(
        request_id="cap-1",
        ride_id="ride-1",
        final_fare_idr=42_000,
        driver_mobile_number=DRIVER,
        platform_fee_idr=8_000,
    )
    await h.payments.CaptureRidePayment(capture, metadata=DISPATCH, timeout=DEADLINE)
    # A retry of the capture: answered from its request_id.
    await h.payments.CaptureRidePayment(capture, metadata=DISPATCH, timeout=DEADLINE)
    tip = await h.payments.TipDriver(
        payment_service_pb2.TipDriverRequest(
            request_id="tip-1", ride_id="ride-1", amount_idr=5_000
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    cash_out = await h.funding.CashOut(
        funding_service_pb2.CashOutRequest(
            request_id="out-1",
            mobile_number=DRIVER,
            bank_account=bank(account_name="Siti"),
            amount_idr=20_000,
        ),
        metadata=APP,
        timeout=DEADLINE,
    )
    assert (await settled(h, cash_out.transaction.transaction_id)).status == SUCCEEDED
    await h.transactions.ListTransactions(
        transaction_service_pb2.ListTransactionsRequest(mobile_number=DRIVER),
        metadata=APP,
        timeout=DEADLINE,
    )
    events = await h.events()
    stream.cancel()
    await h.assert_books_agree()

    async def stream_closed() -> bool:
        return value(await scrape(h), "wallet_event_watchers") == 0

    await wait_for(stream_closed)
    after = await scrape(h)

    # gRPC: each walkthrough step by service, method and code; latency; in flight.
    for service, method in (
        (ACCOUNT, "RegisterCustomer"),
        (ACCOUNT, "RequestOtp"),
        (ACCOUNT, "VerifyOtp"),
        (ACCOUNT, "UpgradeKyc"),
        (ACCOUNT, "GetAccount"),
        (ACCOUNT, "CheckFunds"),
        ("wallet.v1.FundingService", "GetTopUpInstructions"),
        ("wallet.v1.FundingService", "CashOut"),
        (PAYMENT, "AuthorizeRidePayment"),
        (PAYMENT, "TipDriver"),
        (TRANSACTION, "ListTransactions"),
    ):
        assert calls(after, service, method) >= 1, method
        assert (
            value(
                after,
                "wallet_grpc_call_seconds",
                "wallet_grpc_call_seconds_count",
                service=service,
                method=method,
            )
            >= 1
        ), method
    assert calls(after, PAYMENT, "CaptureRidePayment") == 2
    assert calls(after, TRANSACTION, "WatchEvents", "CANCELLED") == 2  # ours, h.events()'s
    in_flight = {"service": TRANSACTION, "method": "WatchEvents"}
    assert value(watching, "wallet_grpc_calls_in_flight", **in_flight) == 1
    assert value(after, "wallet_grpc_calls_in_flight", **in_flight) == 0
    assert value(after, "wallet_grpc_refused") == 0

    # KasPro: every endpoint the walkthroughs use, by outcome; latency; the token.
    for endpoint in (
        "register_customer",
        "get_otp",
        "validate_otp",
        "ekyc_upgrade",
        "account_inquiry",
        "payment_to_merchant",
        "p2p_transfer",
    ):
        assert (
            value(after, "wallet_kaspro_calls", endpoint=endpoint, outcome="code_succeeded") >= 1
        ), endpoint
        assert (
            value(
                after,
                "wallet_kaspro_call_seconds",
                "wallet_kaspro_call_seconds_count",
                endpoint=endpoint,
            )
            >= 1
        ), endpoint
    # A cash-out is accepted in process; its callback settles it.
    assert (
        value(after, "wallet_kaspro_calls", endpoint="bank_transfer", outcome="code_in_process")
        == 1
    )
    assert value(after, "wallet_kaspro_calls", endpoint="token", outcome="http_2xx") == 1
    assert value(after, "wallet_kaspro_token_refreshes", reason="due") == 1
    assert value(after, "wallet_kaspro_calls", outcome="timeout") == 0

    # Money: each operation once it was final; the replay; the hold while it was open.
    for type_ in ("TOP_UP", "RIDE_HOLD", "RIDE_CAPTURE", "TIP", "CASH_OUT"):
        assert value(after, "wallet_operations", type=type_, status="SUCCEEDED") == 1, type_
    assert value(after, "wallet_operations", status="FAILED") == 0
    assert value(after, "wallet_idempotent_replays") == 1
    assert (
        value(during_ride, "wallet_holds_open"),
        value(during_ride, "wallet_holds_escrow_idr"),
    ) == (
        1,
        50_000,
    )
    assert (value(after, "wallet_holds_open"), value(after, "wallet_holds_escrow_idr")) == (0, 0)
    assert value(after, "wallet_unresolved_attempts") == 0
    assert value(after, "wallet_frozen_operations") == 0
    assert value(after, "wallet_drifts_open") == 0

    # Callbacks (the top-up's and the cash-out's), OTP, events, the database.
    assert value(after, "wallet_callbacks", verdict="applied") >= 2
    assert value(after, "wallet_otp_sent") == 2
    assert value(watching, "wallet_event_watchers") == 1
    lag_count = "wallet_event_lag_seconds_count"
    assert value(after, "wallet_event_lag_seconds", lag_count) >= len(events)
    transactions = value(
        after, "wallet_db_transaction_seconds", "wallet_db_transaction_seconds_count"
    )
    assert transactions > value(
        before, "wallet_db_transaction_seconds", "wallet_db_transaction_seconds_count"
    )
    assert "wallet_db_connections_in_use" in after
    assert value(after, "wallet_db_transaction_retries", cause="conflict") >= 0

    # No label names a person, a ride, a request or a reference.
    known = (
        CANONICAL,
        PASSENGER,
        DRIVER,
        "ride-1",
        "auth-1",
        "cap-1",
        "out-1",
        tip.transaction.transaction_id,
        cash_out.transaction.transaction_id,
        top_up["reffId"],
    )
    assert suspicious_labels(after.values(), *known) == []


async def test_otp_refusals_wrong_guesses_and_lockouts_are_counted(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    # Within the cooldown: refused.
    assert_failure(
        await expect_failure(h.request_otp()),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "OTP_RATE_LIMITED",
    )
    wrong = otp[:-1] + str((int(otp[-1]) + 1) % 10)
    limit = h.config.otp.max_failed_attempts
    for _ in range(limit):
        await expect_failure(h.verify_otp(wrong))

    found = await scrape(h)

    assert value(found, "wallet_otp_sent") == 1
    assert value(found, "wallet_otp_rate_limited") == 1
    assert value(found, "wallet_otp_wrong_guesses") == limit
    assert value(found, "wallet_otp_lockouts") == 1
    # The cooldown's refusal is not an overload.
    assert value(found, "wallet_grpc_refused") == 0
    assert calls(found, ACCOUNT, "RequestOtp", "RESOURCE_EXHAUSTED") == 1


async def test_calls_refused_for_overload_are_counted_by_limit(h: Harness) -> None:
    limit, burst = 2, 6
    await h.restart(h.with_config(max_concurrent_rpcs=limit))
    await h.register()
    await h.arm_fault(INQUIRY_PATH, "delay", times=limit, delay_seconds=0.5)

    results = await asyncio.gather(*(h.get_account() for _ in range(burst)), return_exceptions=True)

    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == burst - limit
    found = await scrape(h)
    assert value(found, "wallet_grpc_refused", limit="concurrent_rpcs") == burst - limit
    assert value(found, "wallet_grpc_refused", limit="watch_streams") == 0
    assert calls(found, ACCOUNT, "GetAccount", "RESOURCE_EXHAUSTED") == burst - limit
    assert calls(found, ACCOUNT, "GetAccount") == limit


async def test_a_kaspro_timeout_and_its_status_inquiry_are_counted(h: Harness) -> None:
    await h.onboard(PASSENGER, 100_000)
    await h.onboard(DRIVER, name="Siti")
    await h.restart(h.with_config(kaspro_timeout_seconds=0.3))
    await h.arm_fault(P2P_PATH, "delay", delay_seconds=1.0)

    failure = await expect_failure(
        h.payments.Transfer(
            payment_service_pb2.TransferRequest(
                request_id="transfer-1",
                from_mobile_number=PASSENGER,
                to_mobile_number=DRIVER,
                amount_idr=5_000,
            ),
            metadata=APP,
            timeout=DEADLINE,
        )
    )
    assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    pending = await scrape(h)
    await asyncio.sleep(1.0)  # the sandbox executes the late transfer
    await h.settle()
    settled_ = await scrape(h)

    assert value(pending, "wallet_kaspro_calls", endpoint="p2p_transfer", outcome="timeout") == 1
    assert value(pending, "wallet_unresolved_attempts") == 1
    assert value(pending, "wallet_oldest_unresolved_attempt_seconds") >= 0
    assert value(settled_, "wallet_kaspro_status_inquiries", state="succeeded") == 1
    assert value(settled_, "wallet_operations", type="TRANSFER", status="SUCCEEDED") == 1
    assert value(settled_, "wallet_unresolved_attempts") == 0
    assert calls(settled_, PAYMENT, "Transfer", "UNAVAILABLE") == 1


async def test_shared_gauges_are_read_from_the_database_at_scrape(h: Harness) -> None:
    """A drift another replica recorded shows on this one's next scrape."""
    assert value(await scrape(h), "wallet_drifts_open") == 0

    await h.running.db.run(
        lambda tx: record_drift(
            tx, f"subscriber:{CANONICAL}", DriftKind.BALANCE, 0, 10_000, time.time()
        )
    )

    assert value(await scrape(h), "wallet_drifts_open") == 1

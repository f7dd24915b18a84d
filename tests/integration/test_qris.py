"""QRIS payments: the payload is checked before KasPro, the amount comes from the QR or the
caller, and KasPro's callback settles the payment once."""

from __future__ import annotations

import pytest
from qris_samples import build_qris
from wallet.v1 import common_pb2, payment_service_pb2

from .conftest import (
    APP,
    CANONICAL,
    DEADLINE,
    LOCAL,
    Harness,
    assert_failure,
    expect_failure,
)
from .helpers import (
    FAILED,
    INVALID,
    PENDING,
    PRECONDITION,
    PROCESSING,
    SUCCEEDED,
    Books,
    last_sequence,
    settled,
    transaction_statuses,
)

QRIS_PATH = "/qris-issuer/"
SUBSCRIBER = f"subscriber:{CANONICAL}"
STATIC_QR = build_qris("TOKO KOPI SENJA")


def pay(
    payload: str = STATIC_QR, amount_idr: int = 15_000, request_id: str = "qris-1"
) -> payment_service_pb2.PayQrisRequest:
    return payment_service_pb2.PayQrisRequest(
        request_id=request_id, mobile_number=LOCAL, qris_payload=payload, amount_idr=amount_idr
    )


async def send(h: Harness, request: payment_service_pb2.PayQrisRequest) -> common_pb2.Transaction:
    response = await h.payments.PayQris(request, metadata=APP, timeout=DEADLINE)
    return response.transaction


def flip(payload: str, index: int) -> str:
    """``payload`` with one (printable, hex-digit) character changed."""
    other = "2" if payload[index] == "1" else "1"
    return payload[:index] + other + payload[index + 1 :]


async def test_static_qr_is_processing_then_settled_by_the_callback(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    ledger_before = await h.ledger()
    after = await last_sequence(h)

    t = await send(h, pay(STATIC_QR, 15_000))

    assert t.status == PROCESSING
    assert t.type == common_pb2.TRANSACTION_TYPE_QRIS_PAYMENT
    assert (t.amount_idr, t.mobile_number, t.merchant_name) == (
        15_000,
        "+6281234567890",
        "TOKO KOPI SENJA",
    )
    done = await settled(h, t.transaction_id)
    assert (done.status, done.merchant_name, done.fee_idr) == (SUCCEEDED, "TOKO KOPI SENJA", 0)
    calls = await h.kaspro_requests(QRIS_PATH)
    assert len(calls) == 1
    sent = [x for x in await h.sandbox_transactions() if x["requestId"] == calls[0]["requestId"]]
    assert [(x["amount"], x["details"]) for x in sent] == [
        (15_000, {"merchantName": "TOKO KOPI SENJA"})
    ]
    balances = await h.sandbox_balances()
    assert balances["subscribers"][LOCAL] == 85_000
    assert balances["external"]["qris"] == 15_000
    ledger = await h.ledger()
    assert ledger[SUBSCRIBER] - ledger_before[SUBSCRIBER] == -15_000
    assert ledger["external:qris"] - ledger_before.get("external:qris", 0) == 15_000
    await h.assert_books_agree()
    assert await transaction_statuses(h, t.transaction_id, after) == [
        PENDING,
        PROCESSING,
        SUCCEEDED,
    ]
    # A replay reports the payment and pays nothing again.
    replay = await send(h, pay(STATIC_QR, 15_000))
    assert (replay.transaction_id, replay.status) == (t.transaction_id, SUCCEEDED)
    assert len(await h.kaspro_requests(QRIS_PATH)) == 1


@pytest.mark.parametrize("amount_idr", [0, 27_500], ids=["amount-unset", "amount-repeated"])
async def test_dynamic_qr_pays_the_amount_it_carries(h: Harness, amount_idr: int) -> None:
    await h.onboard(LOCAL, 100_000)

    t = await send(h, pay(build_qris("WARUNG BU SITI", amount_idr=27_500), amount_idr))

    assert (t.amount_idr, t.merchant_name) == (27_500, "WARUNG BU SITI")
    done = await settled(h, t.transaction_id)
    assert done.status == SUCCEEDED
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 72_500
    await h.assert_books_agree()


@pytest.mark.parametrize(
    ("payload", "amount_idr", "field"),
    [
        pytest.param(
            build_qris(amount_idr=27_500), 30_000, "amount_idr", id="dynamic-other-amount"
        ),
        pytest.param(STATIC_QR, 0, "amount_idr", id="static-without-amount"),
        pytest.param(STATIC_QR, -15_000, "amount_idr", id="negative-amount"),
        pytest.param("", 15_000, "qris_payload", id="empty-payload"),
        pytest.param("hello, this is not a QR", 15_000, "qris_payload", id="malformed"),
        pytest.param(STATIC_QR[:-10], 15_000, "qris_payload", id="truncated"),
        pytest.param(
            flip(STATIC_QR, STATIC_QR.index("KOPI")), 15_000, "qris_payload", id="wrong-crc-body"
        ),
        pytest.param(flip(STATIC_QR, len(STATIC_QR) - 1), 15_000, "qris_payload", id="wrong-crc"),
    ],
)
async def test_bad_qris_requests_are_invalid_and_never_reach_kaspro(
    h: Harness, payload: str, amount_idr: int, field: str
) -> None:
    await h.onboard(LOCAL, 100_000)
    books = await Books.take(h)

    failure = await expect_failure(send(h, pay(payload, amount_idr)))

    assert_failure(failure, INVALID, "INVALID_FIELD", field)
    await books.assert_unchanged(h)


async def test_failing_merchant_ends_failed_and_the_money_comes_back(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    books = await Books.take(h)
    after = await last_sequence(h)

    t = await send(h, pay(build_qris("FAIL MART"), 15_000))

    assert (t.status, t.merchant_name) == (PROCESSING, "FAIL MART")
    done = await settled(h, t.transaction_id)
    assert done.status == FAILED
    assert done.failure_message
    balances = await h.sandbox_balances()
    assert balances["subscribers"] == books.sandbox["subscribers"]
    assert balances["external"] == books.sandbox["external"]
    assert await h.ledger() == books.ledger
    await h.assert_books_agree()
    assert await transaction_statuses(h, t.transaction_id, after) == [
        PENDING,
        PROCESSING,
        FAILED,
    ]


async def test_not_linked_wallet_cannot_pay(h: Harness) -> None:
    await h.register(LOCAL, request_id="register-unlinked")
    await h.top_up(LOCAL, 100_000)
    books = await Books.take(h)

    failure = await expect_failure(send(h, pay()))

    assert_failure(failure, PRECONDITION, "WALLET_NOT_LINKED")
    await books.assert_unchanged(h)


async def test_insufficient_funds_is_refused_by_kaspro_and_moves_nothing(h: Harness) -> None:
    await h.onboard(LOCAL, 10_000)
    books = await Books.take(h)

    failure = await expect_failure(send(h, pay(STATIC_QR, 15_000)))

    assert_failure(failure, PRECONDITION, "INSUFFICIENT_FUNDS")
    assert [c["code"] for c in await h.kaspro_requests(QRIS_PATH)] == [140001]
    await books.assert_unchanged(h, reached_kaspro=True)

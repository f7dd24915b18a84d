"""Transfer (P2P): money moves once between two linked wallets, and both books agree."""

from __future__ import annotations

import grpc
from wallet.v1 import common_pb2, payment_service_pb2

from .conftest import APP, DEADLINE, LOCAL, OTHER_LOCAL, Harness, assert_failure, expect_failure


def transfer(
    amount_idr: int = 25_000, request_id: str = "transfer-1", **fields: str
) -> payment_service_pb2.TransferRequest:
    values = {"from_mobile_number": LOCAL, "to_mobile_number": OTHER_LOCAL, "note": "makan"}
    values.update(fields)
    return payment_service_pb2.TransferRequest(
        request_id=request_id, amount_idr=amount_idr, **values
    )


async def test_transfer_moves_money_once_and_books_agree(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    before = await h.events()

    response = await h.payments.Transfer(transfer(), metadata=APP, timeout=DEADLINE)

    t = response.transaction
    assert t.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED
    assert t.type == common_pb2.TRANSACTION_TYPE_TRANSFER
    assert (t.amount_idr, t.mobile_number, t.counterparty_mobile_number) == (
        25_000,
        "+6281234567890",
        "+6285712345678",
    )
    balances = await h.sandbox_balances()
    assert balances["subscribers"][LOCAL] == 75_000
    assert balances["subscribers"][OTHER_LOCAL] == 25_000
    await h.assert_books_agree()
    events = await h.events(before[-1].sequence)
    assert [
        e.transaction.status for e in events if e.transaction.transaction_id == t.transaction_id
    ] == [
        common_pb2.TRANSACTION_STATUS_PENDING,
        common_pb2.TRANSACTION_STATUS_SUCCEEDED,
    ]

    # A replay answers the same, without a second KasPro call.
    again = await h.payments.Transfer(transfer(), metadata=APP, timeout=DEADLINE)
    assert again.transaction.transaction_id == t.transaction_id
    assert len(await h.kaspro_requests("/p2p-transaction/")) == 1


async def test_insufficient_funds_is_decided_by_kaspro_and_moves_nothing(h: Harness) -> None:
    await h.onboard(LOCAL, 10_000)
    await h.onboard(OTHER_LOCAL, name="Siti")

    failure = await expect_failure(
        h.payments.Transfer(transfer(50_000), metadata=APP, timeout=DEADLINE)
    )

    assert_failure(failure, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    balances = await h.sandbox_balances()
    assert balances["subscribers"][LOCAL] == 10_000
    await h.assert_books_agree()

"""Cash-out: accepted "In Process" by KasPro, settled by its signed callback (or by polling),
booked once, and refused clearly before KasPro when the request cannot be right."""

from __future__ import annotations

import grpc
import pytest
from wallet.v1 import common_pb2, funding_service_pb2

from .conftest import (
    APP,
    CANONICAL,
    DEADLINE,
    LOCAL,
    Harness,
    assert_failure,
    expect_failure,
    wait_for,
)
from .helpers import (
    FAILED,
    INVALID,
    PENDING,
    PRECONDITION,
    PROCESSING,
    SUCCEEDED,
    Books,
    bank,
    callback_answers,
    callback_tries,
    cash_out,
    get_transaction,
    last_sequence,
    settled,
    transaction_statuses,
)

CASH_OUT_PATH = "/bank-transfer/"
STATUS_PATH = "/transaction-status/"
SUBSCRIBER = f"subscriber:{CANONICAL}"


async def send(h: Harness, request: funding_service_pb2.CashOutRequest) -> common_pb2.Transaction:
    response = await h.funding.CashOut(request, metadata=APP, timeout=DEADLINE)
    return response.transaction


async def reference(h: Harness) -> str:
    """Our KasPro requestId of the (only) cash-out sent."""
    calls = await h.kaspro_requests(CASH_OUT_PATH)
    assert len({c["requestId"] for c in calls}) == 1, calls
    value: str = calls[0]["requestId"]
    return value


async def test_bank_cash_out_is_processing_then_settled_by_the_callback(h: Harness) -> None:
    await h.onboard(LOCAL, 200_000)
    ledger_before = await h.ledger()
    after = await last_sequence(h)

    t = await send(h, cash_out(50_000))

    assert t.status == PROCESSING
    assert t.type == common_pb2.TRANSACTION_TYPE_CASH_OUT
    assert (t.amount_idr, t.mobile_number) == (50_000, "+6281234567890")
    assert t.WhichOneof("destination") == "bank_account"
    assert t.bank_account == bank()
    done = await settled(h, t.transaction_id)
    assert (done.status, done.fee_idr) == (SUCCEEDED, 0)
    assert done.kaspro_reference
    ref = await reference(h)
    assert await callback_answers(h, ref) == [200]
    balances = await h.sandbox_balances()
    assert balances["subscribers"][LOCAL] == 150_000
    assert balances["external"]["bank"] == 50_000
    ledger = await h.ledger()
    assert ledger[SUBSCRIBER] - ledger_before[SUBSCRIBER] == -50_000
    assert ledger["external:bank"] - ledger_before.get("external:bank", 0) == 50_000
    assert ledger.get("kaspro:fees", 0) == 0
    await h.assert_books_agree()
    assert await transaction_statuses(h, t.transaction_id, after) == [
        PENDING,
        PROCESSING,
        SUCCEEDED,
    ]
    # A replay reports the current state and sends nothing.
    replay = await send(h, cash_out(50_000))
    assert (replay.transaction_id, replay.status) == (t.transaction_id, SUCCEEDED)
    assert len(await h.kaspro_requests(CASH_OUT_PATH)) == 1


async def test_cash_out_fee_is_booked_to_kaspro_fees(h: Harness) -> None:
    await h.sandbox_settings(cash_out_fee=2_500)
    await h.onboard(LOCAL, 200_000)
    ledger_before = await h.ledger()

    t = await send(h, cash_out(50_000))

    done = await settled(h, t.transaction_id)
    assert (done.status, done.amount_idr, done.fee_idr) == (SUCCEEDED, 50_000, 2_500)
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 147_500
    ledger = await h.ledger()
    assert ledger[SUBSCRIBER] - ledger_before[SUBSCRIBER] == -52_500
    assert ledger["external:bank"] - ledger_before.get("external:bank", 0) == 50_000
    assert ledger["kaspro:fees"] - ledger_before.get("kaspro:fees", 0) == 2_500
    await h.assert_books_agree()


async def test_failing_bank_account_ends_failed_and_the_money_comes_back(h: Harness) -> None:
    await h.onboard(LOCAL, 200_000)
    books = await Books.take(h)
    after = await last_sequence(h)

    t = await send(h, cash_out(50_000, to=bank(account_number="1234560000")))

    assert t.status == PROCESSING
    done = await settled(h, t.transaction_id)
    assert done.status == FAILED
    assert done.failure_message
    ref = await reference(h)
    assert await callback_answers(h, ref) == [200]
    journal = [e for e in await h.sandbox_ledger() if e["requestId"] == ref]
    assert [e["type"] for e in journal] == ["BANK_TRANSFER", "REFUND"]
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
    # A replay reports the failure.
    failure = await expect_failure(send(h, cash_out(50_000, to=bank(account_number="1234560000"))))
    assert_failure(failure, PRECONDITION, "PROVIDER_REJECTED")
    assert len(await h.kaspro_requests(CASH_OUT_PATH)) == 1


async def test_retail_cash_out_returns_the_withdrawal_code(h: Harness) -> None:
    await h.onboard(LOCAL, 200_000)
    ledger_before = await h.ledger()

    t = await send(h, cash_out(100_000, outlet=common_pb2.RETAIL_OUTLET_ALFAMART))

    assert t.status == PROCESSING
    assert t.WhichOneof("destination") == "retail_outlet"
    assert t.retail_outlet == common_pb2.RETAIL_OUTLET_ALFAMART
    assert len(t.withdrawal_code) == 12
    assert t.withdrawal_code.isdigit()
    ref = await reference(h)
    at_kaspro = [x for x in await h.sandbox_transactions() if x["requestId"] == ref]
    assert at_kaspro[0]["details"] == {"channel": "ALFAMART", "withdrawalCode": t.withdrawal_code}
    done = await settled(h, t.transaction_id)
    assert (done.status, done.withdrawal_code) == (SUCCEEDED, t.withdrawal_code)
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 100_000
    ledger = await h.ledger()
    assert ledger[SUBSCRIBER] - ledger_before[SUBSCRIBER] == -100_000
    assert ledger["external:retail"] - ledger_before.get("external:retail", 0) == 100_000
    await h.assert_books_agree()


async def test_without_auto_complete_it_stays_processing_until_kaspro_settles_it(
    h: Harness,
) -> None:
    await h.sandbox_settings(auto_complete=False)
    await h.onboard(LOCAL, 200_000)
    ledger_before = await h.ledger()

    # The smallest cash-out allowed.
    t = await send(h, cash_out(10_000))

    assert t.status == PROCESSING
    ref = await reference(h)
    assert await h.settle() == 1
    # KasPro still says PENDING: nothing changes.
    assert [(r["requestId"], r["code"]) for r in await h.kaspro_requests(STATUS_PATH)] == [(ref, 0)]
    assert (await get_transaction(h, t.transaction_id)).status == PROCESSING
    assert await h.ledger() == ledger_before

    await h.complete_at_kaspro(ref)

    done = await settled(h, t.transaction_id)
    assert done.status == SUCCEEDED
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 190_000
    ledger = await h.ledger()
    assert ledger[SUBSCRIBER] - ledger_before[SUBSCRIBER] == -10_000
    await h.assert_books_agree()
    assert len(await h.kaspro_requests(CASH_OUT_PATH)) == 1


async def test_a_callback_delivered_three_times_counts_once(h: Harness) -> None:
    await h.onboard(LOCAL, 200_000)
    t = await send(h, cash_out(50_000))
    done = await settled(h, t.transaction_id)
    assert done.status == SUCCEEDED
    ref = await reference(h)
    events = await transaction_statuses(h, t.transaction_id)
    ledger = await h.ledger()

    await h.resend_callback(ref)
    await h.resend_callback(ref)

    async def delivered_thrice() -> bool:
        tries = await callback_tries(h, ref)
        return [c["statusCode"] for c in tries] == [200, 200, 200]

    await wait_for(delivered_thrice)
    assert await transaction_statuses(h, t.transaction_id) == events
    assert await h.ledger() == ledger
    assert (await get_transaction(h, t.transaction_id)).status == SUCCEEDED
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 150_000
    await h.assert_books_agree()


async def test_account_name_of_100_characters_is_accepted(h: Harness) -> None:
    # common.proto: BankAccount.account_name is "1-100 characters".
    name = ("SITI RAHAYU " * 10)[:100]
    assert len(name) == 100
    assert not name.endswith(" ")
    await h.onboard(LOCAL, 200_000)

    t = await send(h, cash_out(50_000, to=bank(account_name=name)))

    assert (t.status, t.bank_account.account_name) == (PROCESSING, name)
    assert (await settled(h, t.transaction_id)).status == SUCCEEDED
    await h.assert_books_agree()


# Refusals.


@pytest.mark.parametrize(
    ("request_", "code", "reason", "fields"),
    [
        pytest.param(
            cash_out(to=bank(bank_code="999")),
            INVALID,
            "INVALID_FIELD",
            ("bank_account.bank_code",),
            id="unknown-bank-code",
        ),
        pytest.param(
            cash_out(to=bank(account_number="12345abc")),
            INVALID,
            "INVALID_FIELD",
            ("bank_account.account_number",),
            id="account-number-with-letters",
        ),
        pytest.param(
            cash_out(to=bank(account_number="1234")),
            INVALID,
            "INVALID_FIELD",
            ("bank_account.account_number",),
            id="account-number-too-short",
        ),
        pytest.param(
            cash_out(to=bank(account_number="1" * 21)),
            INVALID,
            "INVALID_FIELD",
            ("bank_account.account_number",),
            id="account-number-too-long",
        ),
        pytest.param(
            cash_out(to=bank(account_name="A" * 101)),
            INVALID,
            "INVALID_FIELD",
            ("bank_account.account_name",),
            id="account-name-over-100",
        ),
        pytest.param(
            cash_out(to=bank(bank_code="999", account_number="12a", account_name="")),
            INVALID,
            "INVALID_FIELD",
            (
                "bank_account.bank_code",
                "bank_account.account_number",
                "bank_account.account_name",
            ),
            id="every-bad-field-named",
        ),
        pytest.param(
            cash_out(to=bank(account_name="")),
            INVALID,
            "INVALID_FIELD",
            ("bank_account.account_name",),
            id="empty-account-name",
        ),
        pytest.param(
            funding_service_pb2.CashOutRequest(
                request_id="cash-out-1", mobile_number=LOCAL, amount_idr=50_000
            ),
            INVALID,
            "INVALID_FIELD",
            ("destination",),
            id="no-destination",
        ),
        pytest.param(cash_out(0), INVALID, "INVALID_FIELD", ("amount_idr",), id="zero-amount"),
        pytest.param(
            cash_out(-10_000), INVALID, "INVALID_FIELD", ("amount_idr",), id="negative-amount"
        ),
        pytest.param(
            cash_out(request_id=""), INVALID, "INVALID_FIELD", ("request_id",), id="no-request-id"
        ),
        pytest.param(cash_out(9_999), PRECONDITION, "LIMIT_EXCEEDED", (), id="below-minimum"),
        pytest.param(cash_out(10_000_001), PRECONDITION, "LIMIT_EXCEEDED", (), id="above-maximum"),
    ],
)
async def test_bad_cash_outs_are_refused_before_kaspro(
    h: Harness,
    request_: funding_service_pb2.CashOutRequest,
    code: grpc.StatusCode,
    reason: str,
    fields: tuple[str, ...],
) -> None:
    await h.onboard(LOCAL, 200_000)
    books = await Books.take(h)

    failure = await expect_failure(h.funding.CashOut(request_, metadata=APP, timeout=DEADLINE))

    assert_failure(failure, code, reason, *fields)
    await books.assert_unchanged(h)


async def test_not_linked_wallet_cannot_cash_out(h: Harness) -> None:
    await h.register(LOCAL, request_id="register-unlinked")
    await h.top_up(LOCAL, 200_000)
    books = await Books.take(h)

    failure = await expect_failure(send(h, cash_out()))

    assert_failure(failure, PRECONDITION, "WALLET_NOT_LINKED")
    await books.assert_unchanged(h)


async def test_insufficient_funds_is_refused_by_kaspro_and_moves_nothing(h: Harness) -> None:
    await h.onboard(LOCAL, 20_000)
    books = await Books.take(h)

    failure = await expect_failure(send(h, cash_out(50_000)))

    assert_failure(failure, PRECONDITION, "INSUFFICIENT_FUNDS")
    # KasPro was asked, and refused: nothing moved on either side.
    assert [c["code"] for c in await h.kaspro_requests(CASH_OUT_PATH)] == [140001]
    await books.assert_unchanged(h, reached_kaspro=True)

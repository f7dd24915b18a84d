"""Transfer (P2P): money moves once between two linked wallets, and both books agree."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
import pytest
from wallet.v1 import common_pb2, transaction_service_pb2

from wallet_service.domain.money import Limits
from wallet_service.store import idempotency

from .conftest import (
    ADMIN,
    APP,
    CANONICAL,
    DEADLINE,
    E164,
    INQUIRY_PATH,
    LOCAL,
    NATIONAL,
    OTHER_E164,
    OTHER_LOCAL,
    FakeClock,
    Harness,
    RpcFailure,
    assert_failure,
    expect_failure,
    failure_of,
    wait_for,
)
from .helpers import (
    INVALID,
    P2P_PATH,
    PENDING,
    PRECONDITION,
    PROCESSING,
    SUCCEEDED,
    Books,
    get_transaction,
    last_sequence,
    p2p_calls,
    send,
    transaction_statuses,
    transfer,
)

T = TypeVar("T")

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
STATUS_PATH = "/transaction-status/"
SENDER = f"subscriber:{CANONICAL}"


async def outcome(call: Awaitable[T]) -> T | RpcFailure:
    """The response, or how the call failed."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return failure_of(exc)


async def p2p_executed(h: Harness) -> bool:
    """Whether the sandbox carried out a P2P transfer (its answer may still be held back)."""
    return any(
        (x["type"], x["status"]) == ("P2P", "SUCCESS") for x in await h.sandbox_transactions()
    )


async def transfer_answered_late(h: Harness) -> asyncio.Task[common_pb2.Transaction]:
    """Two linked wallets and a transfer between them that KasPro has executed and answers
    a second later: the call, still waiting for that answer."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    await h.arm_fault(P2P_PATH, "delay", delay_seconds=1.0)
    in_flight = asyncio.create_task(send(h, transfer()))
    await wait_for(lambda: p2p_executed(h))
    return in_flight


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


# Refusals before KasPro.


async def test_sender_not_linked_is_refused_before_kaspro(h: Harness) -> None:
    await h.register(LOCAL, request_id="register-sender")
    await h.top_up(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    books = await Books.take(h)

    failure = await expect_failure(send(h, transfer()))

    assert_failure(failure, PRECONDITION, "WALLET_NOT_LINKED")
    await books.assert_unchanged(h)


@pytest.mark.parametrize("to", [LOCAL, NATIONAL, CANONICAL, E164])
async def test_transfer_to_oneself_is_invalid_in_any_spelling(h: Harness, to: str) -> None:
    await h.onboard(LOCAL, 100_000)
    books = await Books.take(h)

    failure = await expect_failure(send(h, transfer(to_mobile_number=to)))

    assert_failure(failure, INVALID, "INVALID_FIELD", "to_mobile_number")
    await books.assert_unchanged(h)


async def test_unknown_receiver_is_not_found_and_moves_nothing(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    books = await Books.take(h)

    failure = await expect_failure(send(h, transfer()))

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    await books.assert_unchanged(h)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        pytest.param({"amount_idr": 0}, "amount_idr", id="zero-amount"),
        pytest.param({"amount_idr": -5_000}, "amount_idr", id="negative-amount"),
        pytest.param({"note": "n" * 101}, "note", id="note-over-100"),
        pytest.param({"request_id": ""}, "request_id", id="no-request-id"),
    ],
)
async def test_bad_transfer_fields_are_invalid_and_move_nothing(
    h: Harness, request_fields: dict[str, Any], field: str
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    books = await Books.take(h)
    request = transfer()
    for name, value in request_fields.items():
        setattr(request, name, value)

    failure = await expect_failure(send(h, request))

    assert_failure(failure, INVALID, "INVALID_FIELD", field)
    await books.assert_unchanged(h)


async def test_note_of_exactly_100_characters_is_accepted(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")

    t = await send(h, transfer(note="n" * 100))

    assert (t.status, t.note) == (SUCCEEDED, "n" * 100)
    await h.assert_books_agree()


async def test_receiver_at_its_basic_balance_cap_is_refused_before_kaspro(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, 1_990_000, name="Siti")
    books = await Books.take(h)

    failure = await expect_failure(send(h, transfer(10_001)))

    assert_failure(failure, PRECONDITION, "LIMIT_EXCEEDED")
    await books.assert_unchanged(h)

    # Up to the cap exactly is fine.
    t = await send(h, transfer(10_000, request_id="transfer-2"))
    assert t.status == SUCCEEDED
    assert (await h.sandbox_balances())["subscribers"][OTHER_LOCAL] == 2_000_000
    await h.assert_books_agree()


async def test_configured_balance_cap_applies(h: Harness) -> None:
    await h.restart(h.with_config(limits=Limits(basic_balance_cap_idr=50_000)))
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, 40_000, name="Siti")
    books = await Books.take(h)

    failure = await expect_failure(send(h, transfer(20_000)))

    # KasPro's own cap is 2,000,000: the refusal is ours, before any money call.
    assert_failure(failure, PRECONDITION, "LIMIT_EXCEEDED")
    await books.assert_unchanged(h)


async def test_monthly_volume_cap_refuses_the_transfer_that_would_break_it(h: Harness) -> None:
    # The 30-day volume counts every rupiah in and out of the wallet (the 100,000
    # top-up included): 100,000 + 30,000 fits under 150,000, 30,000 more does not.
    await h.restart(h.with_config(limits=Limits(monthly_volume_cap_idr=150_000)))
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    first = await send(h, transfer(30_000))
    assert first.status == SUCCEEDED
    books = await Books.take(h)

    failure = await expect_failure(send(h, transfer(30_000, request_id="transfer-2")))

    assert_failure(failure, PRECONDITION, "LIMIT_EXCEEDED")
    await books.assert_unchanged(h)
    # The refusal is a decision: the same request is refused again, still without KasPro.
    again = await expect_failure(send(h, transfer(30_000, request_id="transfer-2")))
    assert_failure(again, PRECONDITION, "LIMIT_EXCEEDED")
    await books.assert_unchanged(h)


# Idempotency.


async def test_concurrent_identical_transfers_move_money_once(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")

    answers = await asyncio.gather(*(outcome(send(h, transfer())) for _ in range(20)))

    transactions = [a for a in answers if isinstance(a, common_pb2.Transaction)]
    failures = [a for a in answers if isinstance(a, RpcFailure)]
    assert transactions, failures
    assert {t.transaction_id for t in transactions} == {transactions[0].transaction_id}
    assert {t.status for t in transactions} == {SUCCEEDED}
    for failure in failures:
        assert_failure(failure, grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")
    assert len(await p2p_calls(h)) == 1
    balances = await h.sandbox_balances()
    assert (balances["subscribers"][LOCAL], balances["subscribers"][OTHER_LOCAL]) == (
        75_000,
        25_000,
    )
    await h.assert_books_agree()

    replay = await send(h, transfer())
    assert (replay.transaction_id, replay.status) == (transactions[0].transaction_id, SUCCEEDED)
    assert len(await p2p_calls(h)) == 1


async def test_a_duplicate_while_the_first_waits_for_kaspro_is_in_progress_or_reused(
    h: Harness,
) -> None:
    first = await transfer_answered_late(h)

    same = await expect_failure(send(h, transfer()))
    other = await expect_failure(send(h, transfer(26_000)))

    assert not first.done()
    assert_failure(same, grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")
    assert same.retry_delay is not None
    assert_failure(other, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    done = await first
    assert done.status == SUCCEEDED
    assert len(await p2p_calls(h)) == 1
    balances = await h.sandbox_balances()
    assert (balances["subscribers"][LOCAL], balances["subscribers"][OTHER_LOCAL]) == (
        75_000,
        25_000,
    )
    await h.assert_books_agree()
    # Once it has ended, the same request is answered with it and the other is still refused.
    assert (await send(h, transfer())).transaction_id == done.transaction_id
    again = await expect_failure(send(h, transfer(26_000)))
    assert_failure(again, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert len(await p2p_calls(h)) == 1


@pytest.mark.sqlite_only
async def test_a_key_decided_by_another_writer_meanwhile_creates_nothing(h: Harness) -> None:
    # A second writer of the same database (another process, which one replica never
    # has) could take a running request's key over and decide it while the checks wait
    # for KasPro. The creation then rolls back, and the request answers with what the
    # key says.
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    earlier = await send(h, transfer(request_id="transfer-0"))
    books = await Books.take(h)
    after = await last_sequence(h)
    inquiries = len(await h.kaspro_requests(INQUIRY_PATH))
    request = transfer()
    await h.arm_fault(INQUIRY_PATH, "delay", delay_seconds=1.0)
    in_flight = asyncio.create_task(send(h, request))

    async def checking() -> bool:  # past the key's claim, waiting for the inquiry
        return len(await h.kaspro_requests(INQUIRY_PATH)) > inquiries

    await wait_for(checking)
    with contextlib.closing(sqlite3.connect(h.db_path, timeout=5)) as other, other:
        taken = other.execute(
            "UPDATE idempotency_keys SET state = 'done', operation_id = ?, "
            "holder = 'another process' WHERE request_id = 'transfer-1' AND request_hash = ?",
            (
                earlier.transaction_id,
                hashlib.sha256(request.SerializeToString(deterministic=True)).digest(),
            ),
        )
        assert taken.rowcount == 1
    answered = await in_flight

    assert not in_flight.cancelled()
    assert (answered.transaction_id, answered.status) == (earlier.transaction_id, SUCCEEDED)
    await books.assert_unchanged(h)  # no money call, nothing booked
    assert await h.events(after) == []  # no transaction was created, not even PENDING


async def test_kaspro_unavailable_during_the_checks_decides_nothing(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    books = await Books.take(h)
    after = await last_sequence(h)
    # The receiver's balance-cap check asks KasPro for its account first.
    await h.arm_fault(INQUIRY_PATH, "http_500")

    failure = await expect_failure(send(h, transfer()))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    await books.assert_unchanged(h)
    assert await h.events(after) == []  # no transaction was created
    # Not a decision: the same request runs again, and moves the money once.
    sent = await send(h, transfer())
    assert sent.status == SUCCEEDED
    assert len(await p2p_calls(h)) == 1
    assert (await h.sandbox_balances())["subscribers"][OTHER_LOCAL] == 25_000
    await h.assert_books_agree()


async def test_same_request_id_for_another_amount_is_refused(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    first = await send(h, transfer(25_000))
    books = await Books.take(h)

    failure = await expect_failure(send(h, transfer(26_000)))

    assert_failure(failure, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    await books.assert_unchanged(h)
    # The original is untouched and still answered again.
    assert (await send(h, transfer(25_000))).transaction_id == first.transaction_id
    await books.assert_unchanged(h)


async def test_a_retry_after_its_key_was_purged_runs_again(h: Harness, clock: FakeClock) -> None:
    # Past the retention the key is forgotten (the housekeeping loop's purge, called
    # here on the running service's database): a retry is a new request and runs.
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    first = await send(h, transfer(25_000))
    assert await send(h, transfer(25_000)) == first

    clock.advance(73 * 3600)
    assert await idempotency.purge(h.running.db, clock() - 72 * 3600) > 0
    again = await send(h, transfer(25_000))

    assert again.transaction_id != first.transaction_id
    assert again.status == SUCCEEDED
    assert len(await p2p_calls(h)) == 2
    await h.assert_books_agree()


@pytest.mark.parametrize("how", ["refused by KasPro", "refused before KasPro"])
async def test_a_refused_transfer_is_refused_the_same_on_every_retry(h: Harness, how: str) -> None:
    await h.onboard(LOCAL, 10_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    if how == "refused by KasPro":
        request, code, reason = transfer(50_000), PRECONDITION, "INSUFFICIENT_FUNDS"
    else:
        await h.restart(h.with_config(limits=Limits(monthly_volume_cap_idr=15_000)))
        request, code, reason = transfer(6_000), PRECONDITION, "LIMIT_EXCEEDED"
    books = await Books.take(h)

    failures = [await expect_failure(send(h, request)) for _ in range(4)]

    for failure in failures:
        assert_failure(failure, code, reason)
    assert len({f.message for f in failures}) == 1
    await books.assert_unchanged(h, reached_kaspro=True)
    assert len(await p2p_calls(h)) == (1 if how == "refused by KasPro" else 0)


async def test_request_ids_are_scoped_per_caller(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    by_app = await send(h, transfer(), metadata=APP)

    by_admin = await send(h, transfer(), metadata=ADMIN)

    assert by_admin.status == SUCCEEDED
    assert by_admin.transaction_id != by_app.transaction_id
    assert len(await p2p_calls(h)) == 2
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 50_000
    await h.assert_books_agree()
    # Each caller's key is still answered with its own transfer.
    assert (await send(h, transfer(), metadata=APP)).transaction_id == by_app.transaction_id
    assert (await send(h, transfer(), metadata=ADMIN)).transaction_id == by_admin.transaction_id
    assert len(await p2p_calls(h)) == 2


# KasPro's outcome unknown.


async def test_kaspro_timeout_is_unavailable_then_settled_by_the_status_inquiry(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    # The short KasPro timeout only once set up: onboarding at 0.3 s fails on a loaded machine.
    await h.restart(h.with_config(kaspro_timeout_seconds=0.3))
    ledger_before = await h.ledger()
    after = await last_sequence(h)
    # The sandbox executes the transfer, then answers after our timeout.
    await h.arm_fault(P2P_PATH, "delay", delay_seconds=1.0)

    failure = await expect_failure(send(h, transfer()))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    transaction_id = failure.error_metadata["transaction_id"]
    assert (await get_transaction(h, transaction_id)).status == PROCESSING
    # Unknown is not booked: our ledger waits for KasPro's word.
    assert await h.ledger() == ledger_before

    assert await h.settle() == 1

    t = await get_transaction(h, transaction_id)
    assert (t.status, t.amount_idr) == (SUCCEEDED, 25_000)
    reference = (await p2p_calls(h))[0]["requestId"]
    assert [r["requestId"] for r in await h.kaspro_requests(STATUS_PATH)] == [reference]
    assert len(await p2p_calls(h)) == 1
    executed = [x for x in await h.sandbox_transactions() if x["requestId"] == reference]
    assert [x["status"] for x in executed] == ["SUCCESS"]
    balances = await h.sandbox_balances()
    assert (balances["subscribers"][LOCAL], balances["subscribers"][OTHER_LOCAL]) == (
        75_000,
        25_000,
    )
    await h.assert_books_agree()
    replay = await send(h, transfer())
    assert (replay.transaction_id, replay.status) == (transaction_id, SUCCEEDED)
    assert len(await p2p_calls(h)) == 1
    assert await transaction_statuses(h, transaction_id, after) == [
        PENDING,
        PROCESSING,
        SUCCEEDED,
    ]


async def test_kaspro_500_is_sent_again_with_the_same_reference_after_the_inquiry(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    books = await Books.take(h)
    after = await last_sequence(h)
    await h.arm_fault(P2P_PATH, "http_500")

    failure = await expect_failure(send(h, transfer()))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    transaction_id = failure.error_metadata["transaction_id"]
    assert (await get_transaction(h, transaction_id)).status == PROCESSING
    # The faulted call was not executed, and nothing is booked.
    await books.assert_unchanged(h, reached_kaspro=True)
    # A retry reports the same unknown outcome and sends nothing new.
    retry = await expect_failure(send(h, transfer()))
    assert_failure(retry, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert retry.error_metadata["transaction_id"] == transaction_id
    assert len(await p2p_calls(h)) == 1

    await h.settle()

    t = await get_transaction(h, transaction_id)
    assert t.status == SUCCEEDED
    calls = await p2p_calls(h)
    assert [c["fault"] for c in calls] == ["http_500", None]
    assert calls[0]["requestId"] == calls[1]["requestId"]
    inquiries = await h.kaspro_requests(STATUS_PATH)
    assert [(r["requestId"], r["code"]) for r in inquiries] == [(calls[0]["requestId"], 150001)]
    executed = [
        x for x in await h.sandbox_transactions() if x["requestId"] == calls[0]["requestId"]
    ]
    assert [x["status"] for x in executed] == ["SUCCESS"]
    balances = await h.sandbox_balances()
    assert (balances["subscribers"][LOCAL], balances["subscribers"][OTHER_LOCAL]) == (
        75_000,
        25_000,
    )
    await h.assert_books_agree()
    ledger = await h.ledger()
    assert (ledger[SENDER], ledger[f"subscriber:{OTHER_E164[1:]}"]) == (75_000, 25_000)
    replay = await send(h, transfer())
    assert (replay.transaction_id, replay.status) == (transaction_id, SUCCEEDED)
    # A second pass finds nothing left to do.
    assert await h.settle() == 0
    assert len(await p2p_calls(h)) == 2
    assert await transaction_statuses(h, transaction_id, after) == [
        PENDING,
        PROCESSING,
        SUCCEEDED,
    ]


async def test_two_passes_over_an_attempt_kaspro_never_saw_send_it_again_once(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    await h.arm_fault(P2P_PATH, "http_500")
    failure = await expect_failure(send(h, transfer()))
    transaction_id = failure.error_metadata["transaction_id"]
    reference = (await p2p_calls(h))[0]["requestId"]

    # Two reconciler passes at once both find the attempt due; the second joins the
    # first's inquiry instead of asking (and, on "not found", sending) a second time.
    # KasPro answers the inquiry late, so that the first pass cannot have finished before
    # the second reads what is due (it did once, on a loaded machine: [0, 1]).
    await h.arm_fault(STATUS_PATH, "delay", delay_seconds=0.5)
    h.clock.advance(60.0)
    reconciler = h.running.reconciler
    assert list(await asyncio.gather(reconciler.run_once(), reconciler.run_once())) == [1, 1]

    assert [r["requestId"] for r in await h.kaspro_requests(STATUS_PATH)] == [reference]
    calls = await p2p_calls(h)
    assert [(c["requestId"], c["fault"]) for c in calls] == [
        (reference, "http_500"),
        (reference, None),
    ]
    assert (await get_transaction(h, transaction_id)).status == SUCCEEDED
    balances = await h.sandbox_balances()
    assert (balances["subscribers"][LOCAL], balances["subscribers"][OTHER_LOCAL]) == (
        75_000,
        25_000,
    )
    await h.assert_books_agree()


async def test_reconciler_waits_for_a_call_still_in_flight_instead_of_asking_kaspro(
    h: Harness,
) -> None:
    # Meanwhile the clock runs past the grace after which an unanswered attempt is due
    # for an inquiry.
    in_flight = await transfer_answered_late(h)
    assert not in_flight.done()

    assert await h.settle() == 1

    assert await h.kaspro_requests(STATUS_PATH) == []  # it shared the call's own answer
    sent = await in_flight
    assert sent.status == SUCCEEDED
    assert len(await p2p_calls(h)) == 1
    assert (await get_transaction(h, sent.transaction_id)).status == SUCCEEDED
    await h.assert_books_agree()


async def test_a_nul_character_in_any_text_field_is_refused_and_moves_nothing(
    h: Harness,
) -> None:
    """Protobuf strings may hold U+0000; PostgreSQL's text cannot. Refused on both engines
    at the edge, naming each field, before the database or KasPro is asked."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    books = await Books.take(h)

    failure = await expect_failure(
        h.payments.Transfer(
            transfer(request_id="nul-1", note="ma\x00kan"), metadata=APP, timeout=DEADLINE
        )
    )
    assert_failure(failure, INVALID, "INVALID_FIELD", "note")
    looked_up = await expect_failure(
        h.transactions.GetTransaction(
            transaction_service_pb2.GetTransactionRequest(transaction_id="\x00"),
            metadata=APP,
            timeout=DEADLINE,
        )
    )
    assert_failure(looked_up, INVALID, "INVALID_FIELD", "transaction_id")
    await books.assert_unchanged(h)

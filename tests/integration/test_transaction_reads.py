"""Reading transactions (GetTransaction, ListTransactions) and following events (WatchEvents).

ListTransactions pages newest first with opaque tokens bound to the listing they came
from (AIP-158); WatchEvents streams the outbox in sequence order, stored events first,
then live ones, and resumes from a sequence without losing or repeating anything
(MONEY-RULES rule 9).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from wallet.v1 import account_service_pb2, common_pb2, payment_service_pb2, transaction_service_pb2

from .conftest import (
    ADMIN,
    APP,
    CANONICAL,
    DEADLINE,
    DISPATCH,
    E164,
    ID_CARD_JPEG,
    LOCAL,
    OTHER_E164,
    OTHER_LOCAL,
    PRICING,
    SELFIE_JPEG,
    SELFIE_WITH_ID_CARD_JPEG,
    Harness,
    Metadata,
    assert_failure,
    expect_failure,
)

TOP_UP = common_pb2.TRANSACTION_TYPE_TOP_UP
TRANSFER = common_pb2.TRANSACTION_TYPE_TRANSFER
SUCCEEDED = common_pb2.TRANSACTION_STATUS_SUCCEEDED
FAILED = common_pb2.TRANSACTION_STATUS_FAILED
PENDING = common_pb2.TRANSACTION_STATUS_PENDING

ListRequest = transaction_service_pb2.ListTransactionsRequest
WatchCall = Any  # grpc.aio.UnaryStreamCall of WatchEvents


@dataclass(frozen=True)
class History:
    """LOCAL's five transactions, newest first, and what each is."""

    newest_first: list[str]
    types: Mapping[str, int]
    statuses: Mapping[str, int]


async def top_up_id(h: Harness, mobile: str, amount_idr: int, channel: str = "VA") -> str:
    sent = await h.top_up(mobile, amount_idr, channel=channel)
    row = await h.running.db.fetch_one(
        "SELECT id FROM transactions WHERE kaspro_reference = ?", (sent["reffId"],)
    )
    assert row is not None
    return str(row["id"])


async def transfer(
    h: Harness, request_id: str, amount_idr: int, from_: str = LOCAL, to: str = OTHER_LOCAL
) -> common_pb2.Transaction:
    response = await h.payments.Transfer(
        payment_service_pb2.TransferRequest(
            request_id=request_id,
            from_mobile_number=from_,
            to_mobile_number=to,
            amount_idr=amount_idr,
        ),
        metadata=APP,
        timeout=DEADLINE,
    )
    return response.transaction


async def failed_transfer_id(h: Harness, request_id: str, amount_idr: int) -> str:
    """A transfer KasPro refuses (insufficient funds): recorded as FAILED."""
    failure = await expect_failure(transfer(h, request_id, amount_idr))
    assert_failure(failure, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    row = await h.running.db.fetch_one(
        "SELECT id FROM transactions WHERE type = 'TRANSFER' AND amount_idr = ?", (amount_idr,)
    )
    assert row is not None, "the refused transfer was not recorded"
    return str(row["id"])


async def make_history(h: Harness) -> History:
    """Five transactions of LOCAL, one clock second apart (both wallets onboarded)."""
    await h.onboard(LOCAL)
    await h.onboard(OTHER_LOCAL, name="Siti")
    ids: list[str] = []
    ids.append(await top_up_id(h, LOCAL, 100_000))
    h.clock.advance(1)
    ids.append((await transfer(h, "t-2", 10_000)).transaction_id)
    h.clock.advance(1)
    ids.append(await top_up_id(h, LOCAL, 20_000, "ALFAMART"))
    h.clock.advance(1)
    ids.append(await failed_transfer_id(h, "t-4", 900_000))
    h.clock.advance(1)
    # LOCAL is the counterparty of this one.
    ids.append((await transfer(h, "t-5", 5_000, OTHER_LOCAL, LOCAL)).transaction_id)
    types = dict(zip(ids, [TOP_UP, TRANSFER, TOP_UP, TRANSFER, TRANSFER], strict=True))
    statuses = dict(zip(ids, [SUCCEEDED, SUCCEEDED, SUCCEEDED, FAILED, SUCCEEDED], strict=True))
    return History(list(reversed(ids)), types, statuses)


async def list_page(
    h: Harness, metadata: Metadata = APP, **fields: Any
) -> transaction_service_pb2.ListTransactionsResponse:
    values: dict[str, Any] = {"mobile_number": LOCAL}
    values.update(fields)
    return await h.transactions.ListTransactions(
        ListRequest(**values), metadata=metadata, timeout=DEADLINE
    )


async def list_all(h: Harness, page_size: int, **fields: Any) -> tuple[list[str], list[str]]:
    """Every page's ids, concatenated, and the tokens handed out along the way."""
    ids: list[str] = []
    tokens: list[str] = []
    token = ""
    for _ in range(50):
        page = await list_page(h, page_size=page_size, page_token=token, **fields)
        ids.extend(t.transaction_id for t in page.transactions)
        tokens.append(page.next_page_token)
        token = page.next_page_token
        if not token:
            return ids, tokens
    pytest.fail("ListTransactions never reached the last page")


# GetTransaction.


async def test_get_transaction_reads_one(h: Harness) -> None:
    await h.onboard(LOCAL)
    await h.onboard(OTHER_LOCAL, name="Siti")
    await h.top_up(LOCAL, 50_000)
    sent = await transfer(h, "t-1", 12_000)

    for metadata in (APP, DISPATCH, ADMIN):
        found = await h.transactions.GetTransaction(
            transaction_service_pb2.GetTransactionRequest(transaction_id=sent.transaction_id),
            metadata=metadata,
            timeout=DEADLINE,
        )
        assert found.transaction == sent


async def test_get_transaction_unknown_is_not_found(h: Harness) -> None:
    failure = await expect_failure(
        h.transactions.GetTransaction(
            transaction_service_pb2.GetTransactionRequest(transaction_id="txn_does_not_exist"),
            metadata=APP,
            timeout=DEADLINE,
        )
    )

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND")


@pytest.mark.parametrize("transaction_id", ["", "x" * 65], ids=["empty", "too-long"])
async def test_get_transaction_needs_an_id(h: Harness, transaction_id: str) -> None:
    failure = await expect_failure(
        h.transactions.GetTransaction(
            transaction_service_pb2.GetTransactionRequest(transaction_id=transaction_id),
            metadata=APP,
            timeout=DEADLINE,
        )
    )

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "transaction_id")


async def test_pricing_may_not_read_transactions(h: Harness) -> None:
    failure = await expect_failure(
        h.transactions.GetTransaction(
            transaction_service_pb2.GetTransactionRequest(transaction_id="txn_x"),
            metadata=PRICING,
            timeout=DEADLINE,
        )
    )

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


# ListTransactions.


async def test_list_is_newest_first_and_pages_without_gaps_or_duplicates(h: Harness) -> None:
    history = await make_history(h)

    first = await list_page(h, page_size=2)
    second = await list_page(h, page_size=2, page_token=first.next_page_token)
    third = await list_page(h, page_size=2, page_token=second.next_page_token)

    assert [t.transaction_id for t in first.transactions] == history.newest_first[:2]
    assert [t.transaction_id for t in second.transactions] == history.newest_first[2:4]
    assert [t.transaction_id for t in third.transactions] == history.newest_first[4:]
    assert first.next_page_token
    assert second.next_page_token
    assert first.next_page_token != second.next_page_token
    assert third.next_page_token == ""
    # One page holds them all, newest first, with what each transaction is.
    everything = await list_page(h)
    assert [t.transaction_id for t in everything.transactions] == history.newest_first
    assert everything.next_page_token == ""
    for t in everything.transactions:
        assert (t.type, t.status) == (
            history.types[t.transaction_id],
            history.statuses[t.transaction_id],
        )
    create_times = [t.create_time.ToNanoseconds() for t in everything.transactions]
    assert create_times == sorted(create_times, reverse=True)


async def test_every_page_size_walks_the_whole_list_once(h: Harness) -> None:
    history = await make_history(h)

    for size in (1, 3, 4, 5, 100):
        ids, tokens = await list_all(h, size)
        assert ids == history.newest_first, size
        assert tokens[-1] == ""
        assert all(tokens[:-1])
        # No trailing empty page: the last page is the one that says there is no more.
        assert len(tokens) == -(-5 // size), (size, tokens)


async def test_paging_is_exact_when_transactions_share_a_create_time(h: Harness) -> None:
    await h.onboard(LOCAL)
    # The clock stands still: all seven top-ups have the same create_time.
    created = {await top_up_id(h, LOCAL, 10_000 + i) for i in range(7)}

    ids, tokens = await list_all(h, 2)

    assert len(ids) == 7
    assert set(ids) == created
    assert len(tokens) == 4
    assert ids == [t.transaction_id for t in (await list_page(h)).transactions]


async def test_a_changed_page_size_continues_where_the_last_page_ended(h: Harness) -> None:
    history = await make_history(h)

    first = await list_page(h, page_size=1)
    rest = await list_page(h, page_size=10, page_token=first.next_page_token)

    assert [t.transaction_id for t in rest.transactions] == history.newest_first[1:]
    assert rest.next_page_token == ""


async def test_filter_by_type_and_by_status(h: Harness) -> None:
    history = await make_history(h)
    newest = history.newest_first

    top_ups = await list_page(h, type=TOP_UP)
    transfers = await list_page(h, type=TRANSFER)
    failed = await list_page(h, status=FAILED)
    succeeded_transfers = await list_page(h, type=TRANSFER, status=SUCCEEDED)
    none = await list_page(h, type=common_pb2.TRANSACTION_TYPE_CASH_OUT)

    assert [t.transaction_id for t in top_ups.transactions] == [
        i for i in newest if history.types[i] == TOP_UP
    ]
    assert [t.transaction_id for t in transfers.transactions] == [
        i for i in newest if history.types[i] == TRANSFER
    ]
    assert [t.transaction_id for t in failed.transactions] == [
        i for i in newest if history.statuses[i] == FAILED
    ]
    assert [t.transaction_id for t in succeeded_transfers.transactions] == [
        i for i in newest if history.types[i] == TRANSFER and history.statuses[i] == SUCCEEDED
    ]
    assert list(none.transactions) == []
    # A filtered listing pages too.
    first = await list_page(h, type=TRANSFER, page_size=2)
    second = await list_page(h, type=TRANSFER, page_size=2, page_token=first.next_page_token)
    assert [t.transaction_id for t in (*first.transactions, *second.transactions)] == [
        t.transaction_id for t in transfers.transactions
    ]
    assert second.next_page_token == ""


async def test_a_wallet_sees_the_transfers_it_received(h: Harness) -> None:
    await h.onboard(LOCAL)
    await h.onboard(OTHER_LOCAL, name="Siti")
    await h.top_up(LOCAL, 50_000)
    sent = await transfer(h, "t-1", 7_000)

    received = await list_page(h, mobile_number=OTHER_E164)

    assert [t.transaction_id for t in received.transactions] == [sent.transaction_id]
    (t,) = received.transactions
    assert (t.mobile_number, t.counterparty_mobile_number) == (E164, OTHER_E164)
    assert (t.type, t.status, t.amount_idr) == (TRANSFER, SUCCEEDED, 7_000)


async def test_every_spelling_of_the_number_lists_the_same(h: Harness) -> None:
    history = await make_history(h)

    for spelling in (LOCAL, CANONICAL, E164):
        page = await list_page(h, mobile_number=spelling)
        assert [t.transaction_id for t in page.transactions] == history.newest_first
    # A token is for the wallet, whichever spelling asked for it.
    first = await list_page(h, page_size=2)
    second = await list_page(h, mobile_number=E164, page_size=2, page_token=first.next_page_token)
    assert [t.transaction_id for t in second.transactions] == history.newest_first[2:4]


async def test_a_wallet_with_no_transactions_lists_nothing(h: Harness) -> None:
    page = await list_page(h)

    assert list(page.transactions) == []
    assert page.next_page_token == ""


@pytest.mark.parametrize(
    "other",
    [
        {"mobile_number": OTHER_LOCAL},
        {"type": TOP_UP},
        {"status": SUCCEEDED},
    ],
    ids=["other-wallet", "other-type", "other-status"],
)
async def test_a_page_token_only_serves_the_listing_it_came_from(
    h: Harness, other: dict[str, Any]
) -> None:
    await make_history(h)
    token = (await list_page(h, page_size=2)).next_page_token
    assert token

    failure = await expect_failure(list_page(h, page_size=2, page_token=token, **other))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "page_token")


def forged_token(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!not-base64!!!",
        forged_token(1.0, "txn_x"),
        forged_token(1.0, "txn_x", "0123456789abcdef"),
        forged_token("yesterday", "txn_x", "0123456789abcdef"),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
    ],
)
async def test_a_garbage_page_token_is_invalid(h: Harness, token: str) -> None:
    failure = await expect_failure(list_page(h, page_token=token))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "page_token")


@pytest.mark.parametrize("page_size", [101, -1, 1_000_000])
async def test_page_size_above_100_is_invalid(h: Harness, page_size: int) -> None:
    failure = await expect_failure(list_page(h, page_size=page_size))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "page_size")


@pytest.mark.parametrize("mobile", ["", "12345", "+6281234567890x"])
async def test_list_needs_a_valid_number(h: Harness, mobile: str) -> None:
    failure = await expect_failure(list_page(h, mobile_number=mobile))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "mobile_number")


async def test_unknown_filter_values_are_invalid(h: Harness) -> None:
    failure = await expect_failure(list_page(h, type=99, status=42))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "type", "status")


async def test_pricing_may_not_list_transactions(h: Harness) -> None:
    failure = await expect_failure(list_page(h, metadata=PRICING))

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


# WatchEvents.


def watch(h: Harness, after: int = 0, metadata: Metadata = DISPATCH) -> WatchCall:
    return h.transactions.WatchEvents(
        transaction_service_pb2.WatchEventsRequest(after_sequence=after), metadata=metadata
    )


async def read_events(call: WatchCall, count: int) -> list[common_pb2.Event]:
    """The next ``count`` events of an open stream (failing if they do not come)."""
    found: list[common_pb2.Event] = []
    for _ in range(count):
        response = await asyncio.wait_for(call.read(), 5.0)
        assert isinstance(response, transaction_service_pb2.WatchEventsResponse), response
        found.append(response.event)
    return found


async def stored_event_count(h: Harness) -> int:
    row = await h.running.db.fetch_one("SELECT count(*) AS n FROM events")
    assert row is not None
    return int(row["n"])


def assert_full_snapshots(events: list[common_pb2.Event]) -> None:
    for event in events:
        subject = event.WhichOneof("subject")
        if event.type == common_pb2.EVENT_TYPE_TRANSACTION_UPDATED:
            assert subject == "transaction", event
            t = event.transaction
            assert t.transaction_id, event
            assert t.mobile_number, event
            assert t.amount_idr > 0, event
            assert t.type != common_pb2.TRANSACTION_TYPE_UNSPECIFIED, event
            assert t.status != common_pb2.TRANSACTION_STATUS_UNSPECIFIED, event
            assert t.create_time.ToNanoseconds() > 0, event
        elif event.type in (
            common_pb2.EVENT_TYPE_ACCOUNT_LINKED,
            common_pb2.EVENT_TYPE_KYC_UPGRADED,
        ):
            assert subject == "account", event
            assert event.account.mobile_number, event
            assert event.account.linked, event
        else:
            assert event.type == common_pb2.EVENT_TYPE_RIDE_PAYMENT_UPDATED, event
            assert subject == "ride_payment", event
            r = event.ride_payment
            assert r.ride_id, event
            assert r.passenger_mobile_number, event
            assert r.held_amount_idr > 0, event
            assert r.status != common_pb2.RIDE_PAYMENT_STATUS_UNSPECIFIED, event
        assert event.occurred_at.ToNanoseconds() > 0, event
    ids = [e.event_id for e in events]
    assert all(ids), ids
    assert len(set(ids)) == len(ids), ids


async def test_watch_streams_stored_events_in_order_then_live_ones(h: Harness) -> None:
    await make_history(h)
    ride = await h.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="ride-1", ride_id="ride-1", passenger_mobile_number=LOCAL, amount_idr=8_000
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    assert ride.ride_payment.status == common_pb2.RIDE_PAYMENT_STATUS_AUTHORIZED
    stored = await stored_event_count(h)
    call = watch(h)
    try:
        events = await read_events(call, stored)
        assert [e.sequence for e in events] == list(range(1, stored + 1))
        assert {e.WhichOneof("subject") for e in events} == {
            "account",  # the wallets were linked
            "transaction",
            "ride_payment",
        }

        # A transfer made while the stream is open arrives live: created, then succeeded.
        sending = asyncio.create_task(transfer(h, "live-1", 3_000))
        live = await read_events(call, 2)
        sent = await sending
    finally:
        call.cancel()

    assert [e.sequence for e in live] == [stored + 1, stored + 2]
    assert [(e.transaction.transaction_id, e.transaction.status) for e in live] == [
        (sent.transaction_id, PENDING),
        (sent.transaction_id, SUCCEEDED),
    ]
    assert live[-1].transaction == sent  # the snapshot is the transaction as it is now
    assert_full_snapshots(events + live)
    # The ride's own events carry its status as of each change.
    ride_statuses = [e.ride_payment.status for e in events if e.ride_payment.ride_id == "ride-1"]
    assert ride_statuses[-1] == common_pb2.RIDE_PAYMENT_STATUS_AUTHORIZED


async def test_reconnecting_after_the_last_seen_sequence_misses_and_repeats_nothing(
    h: Harness,
) -> None:
    await make_history(h)
    call = watch(h)
    try:
        first = await read_events(call, await stored_event_count(h))
    finally:
        call.cancel()
    last_seen = first[-1].sequence

    # While nobody is listening, more happens.
    missed = await transfer(h, "while-away", 2_000)
    await h.top_up(LOCAL, 1_000)
    expected = await stored_event_count(h) - len(first)
    assert expected == 3

    again = watch(h, last_seen)
    try:
        resumed = await read_events(again, expected)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(again.read(), 0.3)  # nothing more, and no repeat
    finally:
        again.cancel()

    assert [e.sequence for e in resumed] == list(range(last_seen + 1, last_seen + 4))
    assert not {e.event_id for e in resumed} & {e.event_id for e in first}
    assert [e.transaction.transaction_id for e in resumed[:2]] == [missed.transaction_id] * 2
    assert resumed[2].transaction.type == TOP_UP
    # Resuming from the middle sends exactly the tail again, the same events.
    middle = watch(h, 3)
    try:
        tail = await read_events(middle, len(first) - 3)
    finally:
        middle.cancel()
    assert [(e.sequence, e.event_id) for e in tail] == [(e.sequence, e.event_id) for e in first[3:]]


async def test_watch_past_the_end_waits_quietly(h: Harness) -> None:
    await h.onboard(LOCAL, 10_000)
    call = watch(h, 1_000)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call.read(), 0.3)
    finally:
        call.cancel()


@pytest.mark.parametrize("metadata", [APP, PRICING], ids=["app", "pricing"])
async def test_only_dispatch_and_admin_may_watch(h: Harness, metadata: Metadata) -> None:
    await h.onboard(LOCAL, 10_000)

    failure = await expect_failure(watch(h, 0, metadata).read())

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    for allowed in (DISPATCH, ADMIN):
        call = watch(h, 0, allowed)
        try:
            (event,) = await read_events(call, 1)
        finally:
            call.cancel()
        assert event.sequence == 1


async def test_a_negative_after_sequence_is_invalid(h: Harness) -> None:
    failure = await expect_failure(watch(h, -1).read())

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "after_sequence")


async def test_linking_and_ekyc_are_events_too(h: Harness) -> None:
    await h.register()
    await h.link()
    await h.accounts.UpgradeKyc(
        account_service_pb2.UpgradeKycRequest(
            request_id="kyc-events",
            mobile_number=LOCAL,
            id_card_image=ID_CARD_JPEG,
            selfie_image=SELFIE_JPEG,
            selfie_with_id_card_image=SELFIE_WITH_ID_CARD_JPEG,
        ),
        metadata=APP,
        timeout=DEADLINE,
    )

    events = [e for e in await h.events() if e.WhichOneof("subject") == "account"]

    assert [e.type for e in events] == [
        common_pb2.EVENT_TYPE_ACCOUNT_LINKED,
        common_pb2.EVENT_TYPE_KYC_UPGRADED,
    ]
    assert all(e.account.mobile_number == "+6281234567890" for e in events)
    assert all(e.account.linked for e in events)
    assert events[1].account.kyc_status == common_pb2.KYC_STATUS_VERIFIED

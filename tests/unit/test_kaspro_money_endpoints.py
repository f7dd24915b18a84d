"""KasPro money builders and parsers: exact bodies, and answers that never raise.

A money parser must say what it knows: succeeded, in process, refused, or unknown (with a
reason). Garbage, masked amounts and codes out of place are unknown, never zero or failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from wallet_service.domain.phone import MobileNumber
from wallet_service.kaspro.codes import Outcome, Rejection, classify
from wallet_service.kaspro.endpoints import (
    CallbackKind,
    HttpRequest,
    MoneyReply,
    StatusReply,
    TransferState,
    bank_transfer_request,
    p2p_request,
    parse_money,
    parse_p2p,
    parse_transaction_status,
    payment_to_merchant_request,
    qris_payment_request,
    retail_withdrawal_request,
    transaction_status_request,
)

PAYER = MobileNumber("81234567890")
DRIVER = MobileNumber("85712345678")
ESCROW = "888000000000001"
MERCHANT = "888000000000002"
REQUEST_ID = "ABCDEFGHIJKLMNOP"

# Verbatim from the partner document (kaspro-partner-api.txt): every amount is masked.
SEED_BANK_TRANSFER_IN_PROCESS = """{ "code": 1, "message": "In Process", "responseId": "OLSFQ20220214101951114", "data": { "account": "888xxxxxxxxx918", "amount": "4xxx9", "price": "4xxx9", "serviceFee": "6xxx", "reffId": "OLSFQ20220214101951114", "flowType": "Async" } }"""  # noqa: E501

PAYMENT_SUCCESS: dict[str, Any] = {
    "responseId": "RSP1",
    "code": 0,
    "message": "Berhasil",
    "data": {"reffId": "REF1", "account": ESCROW, "amount": "50000", "balanceAfter": "100000"},
}

P2P_SUCCESS: dict[str, Any] = {
    "responseId": "RSP2",
    "code": 0,
    "data": {
        "pocketId": 2,
        "walletTransactions": [
            {
                "account": "081234567890",
                "amount": -50000,
                "reference": 1669700000123,
                "balanceBefore": 150000,
                "balanceAfter": 100000,
            },
            {
                "account": ESCROW,
                "amount": 50000,
                "reference": 1669700000123,
                "balanceBefore": 0,
                "balanceAfter": 50000,
            },
        ],
    },
    "message": "Berhasil",
}

BANK_TRANSFER_ACCEPTED: dict[str, Any] = {
    "code": 1,
    "message": "In Process",
    "responseId": "RSP3",
    "data": {
        "account": "1234567890",
        "amount": "50000",
        "price": "50000",
        "serviceFee": "2500",
        "reffId": "REF3",
        "flowType": "Async",
    },
}

GARBAGE: list[Any] = [
    None,
    [],
    [{"code": 0}],
    "<html><body>502 Bad Gateway</body></html>",
    42,
    {},
    {"message": "Berhasil"},
    {"code": None, "message": "Berhasil"},
    {"code": "zero", "message": "Berhasil"},
    {"code": True, "message": "Berhasil"},
    {"code": [0], "message": "Berhasil"},
    {"code": {"value": 0}, "data": {"amount": "50000"}},
]

MASKED_OR_MALFORMED: list[Any] = [
    "4xxx9",
    "",
    " 50000",
    "50.000",
    "12.5",
    "-5",
    -5,
    12.5,
    50000.0,
    "1e5",
    "\uff15\uff10",
    None,
    True,
    ["50000"],
]


def copy(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(body))
    return result


def with_data(body: dict[str, Any], **data: Any) -> dict[str, Any]:
    result = copy(body)
    result["data"].update(data)
    return result


def p2p_with_amount(amount: Any) -> dict[str, Any]:
    body = copy(P2P_SUCCESS)
    body["data"]["walletTransactions"][1]["amount"] = amount
    return body


# Codes.


def test_transaction_not_found_is_a_known_code() -> None:
    assert classify(150001) == (Outcome.REJECTED, Rejection.TRANSACTION_NOT_FOUND)


# Request builders.


def test_payment_to_merchant_request_is_the_documented_body() -> None:
    request = payment_to_merchant_request(REQUEST_ID, PAYER, 50000, "TX-1", ESCROW)
    assert request == HttpRequest(
        method="POST",
        path="/pil-transaction-payment-to-merchant/",
        json={
            "requestId": REQUEST_ID,
            "mobileNumber": "081234567890",
            "payments": {"pocketId": "2", "amount": "50000", "reference": "TX-1"},
            "destination": ESCROW,
        },
    )
    assert request.json is not None
    assert list(request.json) == ["requestId", "mobileNumber", "payments", "destination"]


def test_p2p_request_between_subscribers_sends_local_numbers() -> None:
    request = p2p_request(REQUEST_ID, PAYER, DRIVER, 15000, "tip")
    assert request == HttpRequest(
        method="POST",
        path="/p2p-transaction/",
        json={
            "requestId": REQUEST_ID,
            "mobileNumber": "081234567890",
            "destination": "085712345678",
            "amount": "15000",
            "pocketId": "2",
            "note": "tip",
        },
    )
    assert request.json is not None
    assert list(request.json) == [
        "requestId",
        "mobileNumber",
        "destination",
        "amount",
        "pocketId",
        "note",
    ]


def test_p2p_request_sends_platform_accounts_verbatim() -> None:
    request = p2p_request(REQUEST_ID, ESCROW, DRIVER, 42000, "")
    assert request.json is not None
    assert request.json["mobileNumber"] == ESCROW
    assert request.json["destination"] == "085712345678"
    back = p2p_request(REQUEST_ID, ESCROW, MERCHANT, 8000, "fee")
    assert back.json is not None
    assert (back.json["mobileNumber"], back.json["destination"]) == (ESCROW, MERCHANT)


def test_bank_transfer_request_is_the_documented_body() -> None:
    request = bank_transfer_request(REQUEST_ID, PAYER, "014", "1234567890", "SITI RAHAYU", 50000)
    assert request == HttpRequest(
        method="POST",
        path="/bank-transfer/",
        json={
            "requestId": REQUEST_ID,
            "mobileNumber": "081234567890",
            "bankCode": "014",
            "accountNumber": "1234567890",
            "accountName": "SITI RAHAYU",
            "amount": "50000",
        },
    )
    assert request.json is not None
    assert list(request.json) == [
        "requestId",
        "mobileNumber",
        "bankCode",
        "accountNumber",
        "accountName",
        "amount",
    ]


@pytest.mark.parametrize("channel", ["ALFAMART", "INDOMARET"])
def test_retail_withdrawal_request_is_a_bank_transfer_with_a_channel(channel: str) -> None:
    request = retail_withdrawal_request(REQUEST_ID, PAYER, channel, 100000)
    assert request == HttpRequest(
        method="POST",
        path="/bank-transfer/",
        json={
            "requestId": REQUEST_ID,
            "mobileNumber": "081234567890",
            "channel": channel,
            "amount": "100000",
        },
    )


@pytest.mark.parametrize("channel", ["alfamart", "", "VA", "7-ELEVEN"])
def test_retail_withdrawal_refuses_unknown_channels(channel: str) -> None:
    with pytest.raises(ValueError, match="channel"):
        retail_withdrawal_request(REQUEST_ID, PAYER, channel, 100000)


def test_qris_payment_request_is_the_documented_body() -> None:
    payload = "00020101021226570011ID.CO.QRIS.WWW6304ABCD"
    request = qris_payment_request(REQUEST_ID, PAYER, payload, 25000)
    assert request == HttpRequest(
        method="POST",
        path="/qris-issuer/",
        json={
            "requestId": REQUEST_ID,
            "mobileNumber": "081234567890",
            "qrisPayload": payload,
            "amount": "25000",
        },
    )


def test_transaction_status_request_is_a_get_by_our_request_id() -> None:
    assert transaction_status_request(REQUEST_ID) == HttpRequest(
        method="GET", path="/transaction-status/", query={"requestId": REQUEST_ID}
    )


@pytest.mark.parametrize("amount", [0, -1, -50000, True, 12.5, "50000"])
def test_builders_refuse_amounts_that_are_not_positive_whole_rupiah(amount: Any) -> None:
    builders: list[Callable[[], HttpRequest]] = [
        lambda: payment_to_merchant_request(REQUEST_ID, PAYER, amount, "TX-1", ESCROW),
        lambda: p2p_request(REQUEST_ID, PAYER, DRIVER, amount, ""),
        lambda: bank_transfer_request(REQUEST_ID, PAYER, "014", "1", "A", amount),
        lambda: retail_withdrawal_request(REQUEST_ID, PAYER, "ALFAMART", amount),
        lambda: qris_payment_request(REQUEST_ID, PAYER, "000201", amount),
    ]
    for build in builders:
        with pytest.raises(ValueError, match="amount"):
            build()


def test_builders_refuse_an_empty_account_number() -> None:
    with pytest.raises(ValueError, match="account"):
        p2p_request(REQUEST_ID, " ", DRIVER, 1000, "")
    with pytest.raises(ValueError, match="account"):
        payment_to_merchant_request(REQUEST_ID, PAYER, 1000, "TX-1", "")


# Payment to merchant.


def test_payment_success() -> None:
    assert parse_money(PAYMENT_SUCCESS) == MoneyReply(
        outcome=Outcome.SUCCEEDED,
        rejection=None,
        code=0,
        message="Berhasil",
        reff_id="REF1",
        amount_idr=50000,
        fee_idr=0,
        withdrawal_code=None,
        merchant_name=None,
        detail="",
    )


def test_payment_amount_as_a_number_and_reff_id_falling_back_to_response_id() -> None:
    body = with_data(PAYMENT_SUCCESS, amount=50000)
    del body["data"]["reffId"]
    reply = parse_money(body)
    assert (reply.outcome, reply.amount_idr, reply.reff_id) == (Outcome.SUCCEEDED, 50000, "RSP1")


def test_payment_in_process() -> None:
    reply = parse_money(dict(PAYMENT_SUCCESS, code=1, message="In Process"))
    assert (reply.outcome, reply.amount_idr, reply.detail) == (Outcome.IN_PROCESS, 50000, "")


def test_payment_insufficient_balance_is_a_rejection_with_nothing_moved() -> None:
    body = {"responseId": "RSP1", "code": 140001, "message": "Insufficient balance"}
    assert parse_money(body) == MoneyReply(
        outcome=Outcome.REJECTED,
        rejection=Rejection.INSUFFICIENT_FUNDS,
        code=140001,
        message="Insufficient balance",
        reff_id="RSP1",
        amount_idr=None,
        fee_idr=0,
        withdrawal_code=None,
        merchant_name=None,
        detail="",
    )


# P2P.


def test_p2p_success_reads_the_destination_line() -> None:
    assert parse_p2p(P2P_SUCCESS, ESCROW) == MoneyReply(
        outcome=Outcome.SUCCEEDED,
        rejection=None,
        code=0,
        message="Berhasil",
        reff_id="RSP2",
        amount_idr=50000,
        fee_idr=0,
        withdrawal_code=None,
        merchant_name=None,
        detail="",
    )


def test_p2p_destination_subscriber_line_in_any_number_form() -> None:
    body = copy(P2P_SUCCESS)
    lines = body["data"]["walletTransactions"]
    lines[0]["account"], lines[1]["account"] = ESCROW, 6285712345678
    lines[0]["amount"], lines[1]["amount"] = "-42000", "42000"
    reply = parse_p2p(body, DRIVER)
    assert (reply.outcome, reply.amount_idr) == (Outcome.SUCCEEDED, 42000)
    # The source's line (negative) read for the source gives the same absolute amount.
    assert parse_p2p(body, ESCROW).amount_idr == 42000


@pytest.mark.parametrize("amount", [50000, "50000", -50000, "-50000"])
def test_p2p_amount_as_number_or_digit_string_is_absolute(amount: Any) -> None:
    assert parse_p2p(p2p_with_amount(amount), ESCROW).amount_idr == 50000


@pytest.mark.parametrize("amount", ["5xxx0", "", "50000.0", 50000.0, None, True, "1e5"])
def test_p2p_unreadable_amount_is_unknown(amount: Any) -> None:
    reply = parse_p2p(p2p_with_amount(amount), ESCROW)
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.amount_idr is None
    assert reply.detail == "malformed amount"
    assert reply.code == 0


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"walletTransactions": None},
        {"walletTransactions": {"account": ESCROW, "amount": 50000}},
        {"walletTransactions": []},
        {"walletTransactions": [{"account": MERCHANT, "amount": 50000}]},
        {"walletTransactions": ["x", 5]},
        {
            "walletTransactions": [
                {"account": ESCROW, "amount": 50000},
                {"account": ESCROW, "amount": 50000},
            ]
        },
    ],
)
def test_p2p_without_one_destination_line_is_unknown(data: dict[str, Any]) -> None:
    reply = parse_p2p({"responseId": "RSP2", "code": 0, "data": data}, ESCROW)
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.amount_idr is None
    assert reply.detail


def test_p2p_masked_destination_account_is_unknown() -> None:
    body = copy(P2P_SUCCESS)
    body["data"]["walletTransactions"][1]["account"] = "888xxxxxxxxx001"
    assert parse_p2p(body, ESCROW).outcome is Outcome.UNKNOWN


@pytest.mark.parametrize(
    ("code", "rejection"),
    [
        (140001, Rejection.INSUFFICIENT_FUNDS),
        (110005, Rejection.CUSTOMER_NOT_FOUND),
        (140002, Rejection.LIMIT_EXCEEDED),
        (400001, Rejection.INVALID_REQUEST),
    ],
)
def test_p2p_rejections(code: int, rejection: Rejection) -> None:
    reply = parse_p2p({"responseId ": "RSP2", "code": code, "message": "no"}, ESCROW)
    assert (reply.outcome, reply.rejection, reply.code) == (Outcome.REJECTED, rejection, code)
    assert (reply.reff_id, reply.message, reply.amount_idr) == ("RSP2", "no", None)


# Bank transfer, retail withdrawal, QRIS.


def test_bank_transfer_accepted() -> None:
    assert parse_money(BANK_TRANSFER_ACCEPTED) == MoneyReply(
        outcome=Outcome.IN_PROCESS,
        rejection=None,
        code=1,
        message="In Process",
        reff_id="REF3",
        amount_idr=50000,
        fee_idr=2500,
        withdrawal_code=None,
        merchant_name=None,
        detail="",
    )


def test_seed_bank_transfer_answer_with_masked_amounts_is_unknown_never_zero() -> None:
    reply = parse_money(json.loads(SEED_BANK_TRANSFER_IN_PROCESS))
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.amount_idr is None
    assert reply.detail == "malformed amount"
    assert reply.code == 1


def test_retail_withdrawal_accepted_carries_the_withdrawal_code() -> None:
    body = with_data(BANK_TRANSFER_ACCEPTED, account="ALFAMART", withdrawalCode="739104")
    reply = parse_money(body)
    assert reply.outcome is Outcome.IN_PROCESS
    assert (reply.amount_idr, reply.fee_idr, reply.withdrawal_code) == (50000, 2500, "739104")


def test_retail_withdrawal_without_a_code_is_still_accepted() -> None:
    reply = parse_money(with_data(BANK_TRANSFER_ACCEPTED, account="INDOMARET"))
    assert (reply.outcome, reply.withdrawal_code) == (Outcome.IN_PROCESS, None)


def test_qris_accepted_carries_the_merchant_name() -> None:
    body = with_data(BANK_TRANSFER_ACCEPTED, merchantName="Warung Bu Siti", serviceFee="0")
    reply = parse_money(body)
    assert reply.outcome is Outcome.IN_PROCESS
    assert (reply.amount_idr, reply.fee_idr, reply.merchant_name) == (50000, 0, "Warung Bu Siti")


def test_async_answers_without_service_fee_have_none() -> None:
    body = copy(BANK_TRANSFER_ACCEPTED)
    del body["data"]["serviceFee"]
    reply = parse_money(body)
    assert (reply.outcome, reply.fee_idr) == (Outcome.IN_PROCESS, 0)


@pytest.mark.parametrize("fee", ["6xxx", "", "-1", 2.5, True, ["0"]])
def test_malformed_service_fee_is_unknown(fee: Any) -> None:
    reply = parse_money(with_data(BANK_TRANSFER_ACCEPTED, serviceFee=fee))
    assert (reply.outcome, reply.detail) == (Outcome.UNKNOWN, "malformed serviceFee")
    assert reply.fee_idr == 0


def test_reff_id_falls_back_to_the_response_id_keys() -> None:
    body = copy(BANK_TRANSFER_ACCEPTED)
    del body["data"]["reffId"]
    assert parse_money(body).reff_id == "RSP3"
    del body["responseId"]
    body["responseId "] = "RSP4"
    assert parse_money(body).reff_id == "RSP4"
    del body["responseId "]
    assert parse_money(body).reff_id is None
    assert parse_money(body).outcome is Outcome.IN_PROCESS


def test_odd_optional_text_fields_are_left_out() -> None:
    body = with_data(BANK_TRANSFER_ACCEPTED, reffId={"id": 1}, withdrawalCode=[1], merchantName="")
    reply = parse_money(body)
    assert reply.outcome is Outcome.IN_PROCESS
    assert (reply.reff_id, reply.withdrawal_code, reply.merchant_name) == ("RSP3", None, None)


def test_code_as_a_string_is_read() -> None:
    reply = parse_money(dict(BANK_TRANSFER_ACCEPTED, code="1"))
    assert (reply.outcome, reply.code) == (Outcome.IN_PROCESS, 1)


# Every money parser on every kind of answer.

MONEY_PARSERS: list[Any] = [parse_money, lambda body: parse_p2p(body, ESCROW)]


@pytest.mark.parametrize("parse", MONEY_PARSERS)
@pytest.mark.parametrize(
    ("code", "rejection"),
    [
        (110005, Rejection.CUSTOMER_NOT_FOUND),
        (140001, Rejection.INSUFFICIENT_FUNDS),
        (140002, Rejection.LIMIT_EXCEEDED),
        (400001, Rejection.INVALID_REQUEST),
        ("140001", Rejection.INSUFFICIENT_FUNDS),
    ],
)
def test_each_money_rejection(parse: Any, code: Any, rejection: Rejection) -> None:
    reply = parse({"responseId": "RSP9", "code": code, "message": "refused"})
    assert reply.outcome is Outcome.REJECTED
    assert reply.rejection is rejection
    assert reply.code == int(code)
    assert (reply.message, reply.reff_id, reply.amount_idr, reply.detail) == (
        "refused",
        "RSP9",
        None,
        "",
    )


@pytest.mark.parametrize("parse", MONEY_PARSERS)
@pytest.mark.parametrize("body", GARBAGE)
def test_garbage_is_unknown_and_never_raises(parse: Any, body: Any) -> None:
    reply = parse(body)
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.rejection is None
    assert reply.amount_idr is None
    assert reply.detail


@pytest.mark.parametrize("parse", MONEY_PARSERS)
@pytest.mark.parametrize(
    ("code", "detail"),
    [
        (2, "unknown code 2"),
        (999999, "unknown code 999999"),
        ("500", "unknown code 500"),
        # Refusals that make no sense for money are not trusted as "nothing moved".
        (110006, "unexpected code 110006"),
        (120001, "unexpected code 120001"),
        (130001, "unexpected code 130001"),
        (150001, "unexpected code 150001"),
        (401001, "gateway refused the call (code 401001)"),
        (401002, "gateway refused the call (code 401002)"),
        (401003, "gateway refused the call (code 401003)"),
    ],
)
def test_codes_out_of_place_are_unknown(parse: Any, code: Any, detail: str) -> None:
    reply = parse({"code": code, "message": "Berhasil", "data": BANK_TRANSFER_ACCEPTED["data"]})
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.rejection is None
    assert reply.amount_idr is None
    assert reply.code == int(code)
    assert reply.detail == detail


@pytest.mark.parametrize("code", [0, 1])
@pytest.mark.parametrize("amount", MASKED_OR_MALFORMED)
def test_unreadable_amount_of_an_accepted_call_is_unknown(code: int, amount: Any) -> None:
    reply = parse_money(dict(with_data(BANK_TRANSFER_ACCEPTED, amount=amount), code=code))
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.amount_idr is None
    assert reply.detail == "malformed amount"


@pytest.mark.parametrize("parse", MONEY_PARSERS)
@pytest.mark.parametrize("data", [None, "x", ["a"]])
def test_accepted_call_without_data_is_unknown(parse: Any, data: Any) -> None:
    body: dict[str, Any] = {"code": 0, "message": "Berhasil"}
    if data is not None:
        body["data"] = data
    reply = parse(body)
    assert (reply.outcome, reply.detail) == (Outcome.UNKNOWN, "answer has no data object")


def test_unknown_reply_details_hold_no_body_text() -> None:
    body = {"code": 0, "message": "081234567890", "data": {"amount": "081234567890x"}}
    reply = parse_money(body)
    assert reply.outcome is Outcome.UNKNOWN
    assert "0812" not in reply.detail


# Status inquiry.


def status_body(**data: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "requestId": REQUEST_ID,
        "reffId": "REF3",
        "status": "SUCCESS",
        "amount": "50000",
        "serviceFee": "2500",
        "mobileNumber": "081234567890",
        "type": "BANK_TRANSFER",
        "message": "Transfer berhasil",
    }
    document.update(data)
    return {"code": 0, "message": "Berhasil", "data": document}


def test_status_success() -> None:
    assert parse_transaction_status(status_body(), REQUEST_ID) == StatusReply(
        state=TransferState.SUCCEEDED,
        reff_id="REF3",
        amount_idr=50000,
        fee_idr=2500,
        message="Transfer berhasil",
        detail="",
        mobile_number=PAYER,
        kind=CallbackKind.BANK_TRANSFER,
    )


def test_status_of_a_top_up_names_its_wallet_and_kind() -> None:
    # What a top-up whose callback could not be verified is recorded from.
    reply = parse_transaction_status(
        status_body(type="TOPUP", mobileNumber="6281234567890", serviceFee="0"), REQUEST_ID
    )
    assert (reply.state, reply.kind, reply.mobile_number, reply.amount_idr, reply.reff_id) == (
        TransferState.SUCCEEDED,
        CallbackKind.TOPUP,
        PAYER,
        50000,
        "REF3",
    )
    unnamed = parse_transaction_status(status_body(mobileNumber="12", type="???"), REQUEST_ID)
    assert (unnamed.mobile_number, unnamed.kind) == (None, CallbackKind.UNKNOWN)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("SUCCESS", TransferState.SUCCEEDED),
        ("success", TransferState.SUCCEEDED),
        ("FAILED", TransferState.FAILED),
        ("Failed", TransferState.FAILED),
        ("PENDING", TransferState.PENDING),
        (" pending ", TransferState.PENDING),
    ],
)
def test_status_words_are_case_insensitive(status: str, state: TransferState) -> None:
    reply = parse_transaction_status(status_body(status=status), REQUEST_ID)
    assert (reply.state, reply.detail) == (state, "")


@pytest.mark.parametrize("status", ["DONE", "", None, 1, "SUCCEEDED", "REFUNDED"])
def test_status_words_we_do_not_know_are_unknown(status: Any) -> None:
    reply = parse_transaction_status(status_body(status=status), REQUEST_ID)
    assert (reply.state, reply.detail) == (TransferState.UNKNOWN, "unknown status")


def test_status_not_found() -> None:
    reply = parse_transaction_status(
        {"code": 150001, "message": "Transaction not found"}, REQUEST_ID
    )
    assert reply == StatusReply(
        state=TransferState.NOT_FOUND,
        reff_id=None,
        amount_idr=None,
        fee_idr=0,
        message="Transaction not found",
        detail="",
    )
    assert parse_transaction_status({"code": "150001"}, REQUEST_ID).state is (
        TransferState.NOT_FOUND
    )


def test_failed_and_pending_may_omit_the_amount_and_fee() -> None:
    for status, state in [("FAILED", TransferState.FAILED), ("PENDING", TransferState.PENDING)]:
        body = status_body(status=status)
        del body["data"]["amount"], body["data"]["serviceFee"]
        reply = parse_transaction_status(body, REQUEST_ID)
        assert (reply.state, reply.amount_idr, reply.fee_idr) == (state, None, 0)


def test_success_without_an_amount_is_unknown() -> None:
    body = status_body()
    del body["data"]["amount"]
    reply = parse_transaction_status(body, REQUEST_ID)
    assert (reply.state, reply.detail) == (TransferState.UNKNOWN, "answer has no amount")


@pytest.mark.parametrize("status", ["SUCCESS", "FAILED", "PENDING"])
@pytest.mark.parametrize("amount", ["4xxx9", "", "12.5", -5, 50000.0, True])
def test_status_masked_amount_is_unknown(status: str, amount: Any) -> None:
    reply = parse_transaction_status(status_body(status=status, amount=amount), REQUEST_ID)
    assert (reply.state, reply.amount_idr, reply.detail) == (
        TransferState.UNKNOWN,
        None,
        "malformed amount",
    )


def test_status_masked_fee_is_unknown_and_missing_fee_is_zero() -> None:
    reply = parse_transaction_status(status_body(serviceFee="6xxx"), REQUEST_ID)
    assert (reply.state, reply.detail) == (TransferState.UNKNOWN, "malformed serviceFee")
    body = status_body(amount=50000)
    del body["data"]["serviceFee"]
    reply = parse_transaction_status(body, REQUEST_ID)
    assert (reply.state, reply.amount_idr, reply.fee_idr) == (TransferState.SUCCEEDED, 50000, 0)


def test_status_for_another_request_id_is_unknown() -> None:
    reply = parse_transaction_status(status_body(requestId="ZZZZZZZZZZZZZZZZ"), REQUEST_ID)
    assert (reply.state, reply.detail) == (TransferState.UNKNOWN, "answer is for another requestId")
    body = status_body()
    del body["data"]["requestId"]
    assert parse_transaction_status(body, REQUEST_ID).state is TransferState.SUCCEEDED


def test_status_message_falls_back_to_the_answers() -> None:
    body = status_body()
    del body["data"]["message"]
    assert parse_transaction_status(body, REQUEST_ID).message == "Berhasil"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        *((garbage, None) for garbage in GARBAGE),
        ({"code": 0, "message": "Berhasil"}, "answer has no data object"),
        ({"code": 1, "message": "In Process"}, "unexpected code 1"),
        ({"code": 110005, "message": "Customer not found"}, "unexpected code 110005"),
        ({"code": 140001, "message": "Insufficient balance"}, "unexpected code 140001"),
        ({"code": 777, "message": "?"}, "unknown code 777"),
        ({"code": 401002}, "gateway refused the call (code 401002)"),
    ],
)
def test_status_without_a_readable_state_is_unknown(body: Any, detail: str | None) -> None:
    reply = parse_transaction_status(body, REQUEST_ID)
    assert reply.state is TransferState.UNKNOWN
    assert (reply.reff_id, reply.amount_idr, reply.fee_idr) == (None, None, 0)
    assert reply.detail
    if detail is not None:
        assert reply.detail == detail

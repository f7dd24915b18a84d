"""Asynchronous money: bank and retail cash-out, QRIS, status inquiry, settling by hand."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from kaspro_sandbox import SandboxConfig

from .partner_client import (
    BANK_TRANSFER_PATH,
    QRIS_PATH,
    FakeClock,
    MoneyPartner,
    fast_money_config,
    money_total,
    qris_payload,
    request_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

NUMBER = "081234567890"
RESPONSE_ID = re.compile(r"OLSFQ[0-9]{17}")
STATUS_KEYS = [
    "requestId",
    "reffId",
    "status",
    "amount",
    "serviceFee",
    "mobileNumber",
    "type",
    "message",
]


@pytest.fixture(scope="module")
def sandbox_config(clock: FakeClock) -> SandboxConfig:
    return fast_money_config(clock)


async def manual(money: MoneyPartner) -> None:
    """Async transfers stay PENDING until settled by hand."""
    await money.control("POST", "/settings", {"auto_complete": False})


def entries(ledger: list[dict[str, Any]]) -> list[tuple[str, str, str, int, int]]:
    return [(e["type"], e["from"], e["to"], e["amount"], e["fee"]) for e in ledger]


# bank transfer


async def test_bank_transfer_is_accepted_in_process(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await manual(money)
    response = await money.bank_transfer(request_id(1), NUMBER, "50000")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["code", "message", "responseId", "data"]
    assert body["code"] == 1
    assert body["message"] == "In Process"
    assert RESPONSE_ID.fullmatch(body["responseId"])
    assert body["data"] == {
        "account": "1234567890",
        "amount": "50000",
        "price": "50000",
        "serviceFee": "0",
        "reffId": body["responseId"],
        "flowType": "Async",
    }
    balances = await money.balances()
    assert balances["subscribers"] == {NUMBER: 100_000}
    assert balances["external"]["bank"] == 50_000
    assert entries(await money.ledger()) == [("BANK_TRANSFER", NUMBER, "external:bank", 50_000, 0)]
    status = (await money.status(request_id(1))).json()
    assert status == {
        "code": 0,
        "message": "Berhasil",
        "data": {
            "requestId": request_id(1),
            "reffId": body["responseId"],
            "status": "PENDING",
            "amount": "50000",
            "serviceFee": "0",
            "mobileNumber": NUMBER,
            "type": "BANK_TRANSFER",
            "message": "In Process",
        },
    }
    assert list(status["data"]) == STATUS_KEYS


async def test_bank_transfer_completes_by_itself(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    body = (await money.bank_transfer(request_id(1), NUMBER, "50000")).json()
    assert (await money.status(request_id(1))).json()["data"]["status"] == "PENDING"
    await money.wait_for_status(request_id(1), "SUCCESS")
    status = (await money.status(request_id(1))).json()["data"]
    assert status["status"] == "SUCCESS"
    assert status["message"] == "Berhasil"
    assert status["reffId"] == body["data"]["reffId"]
    assert entries(await money.ledger()) == [("BANK_TRANSFER", NUMBER, "external:bank", 50_000, 0)]
    balances = await money.balances()
    assert balances["subscribers"] == {NUMBER: 100_000}
    assert balances["external"]["bank"] == 50_000
    view = await money.transaction(request_id(1))
    assert view["settledAt"] is not None
    assert view["details"] == {
        "bankCode": "014",
        "accountNumber": "1234567890",
        "accountName": "SITI RAHAYU",
    }


async def test_an_account_ending_0000_fails_and_is_refunded(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.control("POST", "/settings", {"cash_out_fee": 2_500})
    body = (await money.bank_transfer(request_id(1), NUMBER, "50000", "9990000")).json()
    assert body["code"] == 1
    assert body["data"]["serviceFee"] == "2500"
    assert (await money.balances())["subscribers"] == {NUMBER: 97_500}
    await money.wait_for_status(request_id(1), "FAILED")
    status = (await money.status(request_id(1))).json()["data"]
    assert status["status"] == "FAILED"
    assert status["message"] == "Transaction failed"
    assert status["serviceFee"] == "2500"
    assert entries(await money.ledger()) == [
        ("BANK_TRANSFER", NUMBER, "external:bank", 50_000, 2_500),
        ("REFUND", "external:bank", NUMBER, 50_000, 2_500),
    ]
    balances = await money.balances()
    assert balances["subscribers"] == {NUMBER: 150_000}
    assert balances["external"]["bank"] == 0
    assert balances["externalFlows"]["bank"] == {"in": 52_500, "out": 52_500}


async def test_fee_counts_against_the_balance(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=50_000)
    await money.control("POST", "/settings", {"cash_out_fee": 1})
    body = (await money.bank_transfer(request_id(1), NUMBER, "50000")).json()
    assert body == {
        "responseId": body["responseId"],
        "code": 140001,
        "message": "Insufficient balance",
    }
    assert (await money.status(request_id(1))).json()["data"]["status"] == "FAILED"
    assert await money.ledger() == []


async def test_bank_transfer_from_an_unknown_customer(money: MoneyPartner) -> None:
    body = (await money.bank_transfer(request_id(1), NUMBER, "50000")).json()
    assert body["code"] == 110005


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bankCode": "14"}, "bankCode"),
        ({"bankCode": 14}, "bankCode"),
        ({"accountNumber": "12-34"}, "accountNumber"),
        ({"accountNumber": None}, "accountNumber"),
        ({"accountName": " "}, "accountName"),
        ({"amount": "50.000"}, "amount"),
        ({"channel": "LAWSON"}, "channel"),
        ({"mobileNumber": 81234567890}, "mobileNumber"),
    ],
)
async def test_bank_transfer_invalid_fields(
    money: MoneyPartner, change: dict[str, Any], field: str
) -> None:
    await money.customer(NUMBER, balance=150_000)
    body = {
        "requestId": request_id(1),
        "mobileNumber": NUMBER,
        "bankCode": "014",
        "accountNumber": "1234567890",
        "accountName": "SITI RAHAYU",
        "amount": "50000",
        **change,
    }
    response = await money.post(BANK_TRANSFER_PATH, body)
    assert response.status_code == 400
    assert response.json()["code"] == 400001
    assert response.json()["message"] == f"Invalid request: {field}"


# retail withdrawal


async def test_retail_withdrawal(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await manual(money)
    body = (await money.retail_withdrawal(request_id(1), NUMBER, "100000", "INDOMARET")).json()
    assert body["code"] == 1
    data = body["data"]
    assert list(data) == [
        "account",
        "amount",
        "price",
        "serviceFee",
        "reffId",
        "flowType",
        "withdrawalCode",
    ]
    assert data["account"] == "INDOMARET"
    assert data["amount"] == "100000"
    assert data["flowType"] == "Async"
    assert re.fullmatch(r"[0-9]{12}", data["withdrawalCode"])
    status = (await money.status(request_id(1))).json()["data"]
    assert status["type"] == "RETAIL_WITHDRAWAL"
    await money.control("POST", f"/transactions/{request_id(1)}/complete")
    assert entries(await money.ledger()) == [
        ("RETAIL_WITHDRAWAL", NUMBER, "external:retail", 100_000, 0)
    ]
    assert (await money.balances())["external"]["retail"] == 100_000


async def test_withdrawal_code_depends_only_on_the_request_id(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await manual(money)
    first = (await money.retail_withdrawal(request_id(1), NUMBER, "1000")).json()
    second = (await money.retail_withdrawal(request_id(2), NUMBER, "1000")).json()
    await money.reset()
    await money.customer(NUMBER, balance=150_000)
    again = (await money.retail_withdrawal(request_id(1), NUMBER, "5000", "INDOMARET")).json()
    codes = [b["data"]["withdrawalCode"] for b in (first, second, again)]
    assert codes[0] == codes[2]
    assert codes[0] != codes[1]


# QRIS


async def test_qris_payment(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await manual(money)
    payload = qris_payload("WARUNG BU SITI")
    body = (await money.qris(request_id(1), NUMBER, "25000", payload)).json()
    assert list(body) == ["code", "message", "responseId", "data"]
    assert body["code"] == 1
    assert body["message"] == "In Process"
    assert body["data"] == {
        "account": NUMBER,
        "amount": "25000",
        "price": "25000",
        "serviceFee": "0",
        "reffId": body["responseId"],
        "flowType": "Async",
        "merchantName": "WARUNG BU SITI",
    }
    assert (await money.status(request_id(1))).json()["data"]["type"] == "QRIS"
    await money.control("POST", f"/transactions/{request_id(1)}/complete")
    assert entries(await money.ledger()) == [("QRIS", NUMBER, "external:qris", 25_000, 0)]
    balances = await money.balances()
    assert balances["external"]["qris"] == 25_000
    assert balances["subscribers"] == {NUMBER: 125_000}


async def test_qris_ignores_the_cash_out_fee(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.control("POST", "/settings", {"cash_out_fee": 3000})
    body = (await money.qris(request_id(1), NUMBER, "1000", qris_payload("TOKO"))).json()
    assert body["data"]["serviceFee"] == "0"


async def test_qris_merchant_named_fail_fails(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.qris(request_id(1), NUMBER, "25000", qris_payload("FAIL MART"))
    await money.wait_for_status(request_id(1), "FAILED")
    assert (await money.balances())["subscribers"] == {NUMBER: 150_000}
    assert [e["type"] for e in await money.ledger()] == ["QRIS", "REFUND"]


@pytest.mark.parametrize(
    "payload",
    [
        "not a qris payload",
        "000201010211",  # no tag 59
        "00020101021159",  # truncated header
        "0002010102115920SHORT",  # value shorter than its length
        "000201010211590",
        "",
    ],
)
async def test_unreadable_qris_payload(money: MoneyPartner, payload: str) -> None:
    await money.customer(NUMBER, balance=150_000)
    response = await money.qris(request_id(1), NUMBER, "1000", payload)
    assert response.status_code == 400
    assert response.json()["code"] == 400001
    assert response.json()["message"] == "Invalid request: qrisPayload"


async def test_qris_payload_must_be_a_string(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    response = await money.post(
        QRIS_PATH,
        {"requestId": request_id(1), "mobileNumber": NUMBER, "qrisPayload": 5, "amount": "1"},
    )
    assert response.json()["message"] == "Invalid request: qrisPayload"


# status inquiry


async def test_status_inquiry_not_found(money: MoneyPartner) -> None:
    response = await money.status(request_id(9))
    assert response.status_code == 200
    assert response.json() == {"code": 150001, "message": "Transaction not found"}
    assert (await money.status(reff_id="OLSFQ20220214101951114")).json()["code"] == 150001


async def test_status_inquiry_needs_a_reference(money: MoneyPartner) -> None:
    response = await money.status()
    assert response.status_code == 400
    assert response.json() == {"code": 400001, "message": "Invalid request: requestId"}


async def test_status_inquiry_by_reff_id(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await manual(money)
    reff_id = (await money.bank_transfer(request_id(1), NUMBER, "1000")).json()["data"]["reffId"]
    by_reff = (await money.status(reff_id=reff_id)).json()
    by_request = (await money.status(request_id(1))).json()
    assert by_reff == by_request


async def test_status_of_a_sync_transfer(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    reply = (await money.p2p(request_id(1), NUMBER, "888000000000001", "1000")).json()
    data = (await money.status(request_id(1))).json()["data"]
    assert data == {
        "requestId": request_id(1),
        "reffId": reply["responseId"],
        "status": "SUCCESS",
        "amount": "1000",
        "serviceFee": "0",
        "mobileNumber": NUMBER,
        "type": "P2P",
        "message": "Berhasil",
    }


async def test_status_inquiry_is_signed_and_logged(money: MoneyPartner) -> None:
    response = await money.request(
        "GET", "/transaction-status/", params={"requestId": request_id(1)}, secret="wrong"
    )
    assert response.status_code == 401
    await money.status(request_id(1))
    log = (await money.http.get("/_sandbox/requests")).json()
    assert log[-1]["path"] == "/transaction-status/"
    assert log[-1]["requestId"] == request_id(1)
    assert log[-1]["code"] == 150001


# settling by hand


async def test_fail_by_hand_with_a_message(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await manual(money)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    view = await money.control(
        "POST", f"/transactions/{request_id(1)}/fail", {"message": "Rekening tidak ditemukan"}
    )
    assert view["status"] == "FAILED"
    assert view["code"] == 150002
    status = (await money.status(request_id(1))).json()["data"]
    assert status["status"] == "FAILED"
    assert status["message"] == "Rekening tidak ditemukan"
    assert (await money.balances())["subscribers"] == {NUMBER: 150_000}


async def test_settling_twice_is_409(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await manual(money)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    await money.control("POST", f"/transactions/{request_id(1)}/complete")
    for action in ("complete", "fail"):
        response = await money.http.post(f"/_sandbox/transactions/{request_id(1)}/{action}")
        assert response.status_code == 409
        assert response.json() == {"error": "transaction is SUCCESS, not PENDING"}
    assert len(await money.ledger()) == 1


async def test_settling_a_sync_or_unknown_transaction(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.pay(request_id(1), NUMBER, "1000")
    sync = await money.http.post(f"/_sandbox/transactions/{request_id(1)}/fail")
    assert sync.status_code == 409
    unknown = await money.http.post(f"/_sandbox/transactions/{request_id(2)}/complete")
    assert unknown.status_code == 404
    bad = await money.http.post(
        f"/_sandbox/transactions/{request_id(1)}/complete", json={"message": 5}
    )
    assert bad.status_code == 400


async def test_settling_by_hand_wins_over_the_timer(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.control("POST", "/settings", {"async_delay_seconds": 0.1})
    await money.bank_transfer(request_id(1), NUMBER, "50000", account_number="10000")
    await money.control("POST", f"/transactions/{request_id(1)}/complete")
    await asyncio.sleep(0.2)
    assert (await money.transaction(request_id(1)))["status"] == "SUCCESS"
    assert len(await money.ledger()) == 1


async def test_a_repeated_async_request_is_not_executed_again(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    first = await money.bank_transfer(request_id(1), NUMBER, "50000")
    await money.wait_for_status(request_id(1), "SUCCESS")
    again = await money.bank_transfer(request_id(1), NUMBER, "50000")
    assert again.content == first.content
    assert len(await money.ledger()) == 1
    assert (await money.balances())["subscribers"] == {NUMBER: 100_000}


async def test_reset_cancels_pending_completions(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.control("POST", "/settings", {"async_delay_seconds": 0.05})
    await money.bank_transfer(request_id(1), NUMBER, "50000", account_number="10000")
    await money.http.post("/_sandbox/reset")
    await asyncio.sleep(0.1)
    assert await money.ledger() == []
    assert await money.control("GET", "/transactions") == []


async def test_money_is_conserved_through_async_transfers(money: MoneyPartner) -> None:
    await money.customer(NUMBER, balance=500_000)
    await money.control("POST", "/settings", {"cash_out_fee": 1_000})
    total = money_total(await money.balances())
    await money.bank_transfer(request_id(1), NUMBER, "10000")
    await money.bank_transfer(request_id(2), NUMBER, "20000", account_number="50000")
    await money.retail_withdrawal(request_id(3), NUMBER, "30000")
    await money.qris(request_id(4), NUMBER, "40000", qris_payload("FAIL"))
    assert money_total(await money.balances()) == total
    for n, status in ((1, "SUCCESS"), (2, "FAILED"), (3, "SUCCESS"), (4, "FAILED")):
        await money.wait_for_status(request_id(n), status)
    balances = await money.balances()
    assert money_total(balances) == total
    assert balances["subscribers"] == {NUMBER: 500_000 - 11_000 - 31_000}
    assert balances["external"] == {"bank": 11_000, "qris": 0, "va": 0, "retail": 31_000}


# settings


async def test_settings(money: MoneyPartner) -> None:
    assert await money.control("GET", "/settings") == {
        "async_delay_seconds": 0.05,
        "auto_complete": True,
        "cash_out_fee": 0,
        "callback_url": None,
    }
    changed = await money.control(
        "POST", "/settings", {"async_delay_seconds": 2, "auto_complete": False}
    )
    assert changed["async_delay_seconds"] == 2.0
    assert changed["auto_complete"] is False
    assert changed["cash_out_fee"] == 0
    await money.http.post("/_sandbox/reset")
    assert (await money.control("GET", "/settings"))["auto_complete"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"async_delay_seconds": -1},
        {"async_delay_seconds": "1"},
        {"auto_complete": 1},
        {"cash_out_fee": 1.5},
        {"cash_out_fee": -1},
        {"speed": "fast"},
    ],
)
async def test_bad_settings_are_400(money: MoneyPartner, body: dict[str, Any]) -> None:
    response = await money.http.post("/_sandbox/settings", json=body)
    assert response.status_code == 400
    assert "error" in response.json()

"""Synchronous money: wallet payment and P2P, balance checks, idempotency, the journal."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kaspro_sandbox import SandboxConfig

from .partner_client import (
    CORPORATE,
    ESCROW,
    MERCHANT,
    P2P_PATH,
    PAYMENT_PATH,
    FakeClock,
    MoneyPartner,
    fast_money_config,
    money_total,
    request_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAYER = "081234567890"
DRIVER = "085712345678"
STRANGER = "081299990000"
RESPONSE_ID = re.compile(r"OLSFQ[0-9]{17}")


@pytest.fixture(scope="module")
def sandbox_config(clock: FakeClock) -> SandboxConfig:
    return fast_money_config(clock)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# wallet payment


async def test_payment_answer_shape_and_balances(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    response = await money.pay(request_id(1), PAYER, "50000", destination=ESCROW)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["responseId", "code", "message", "data"]
    assert RESPONSE_ID.fullmatch(body["responseId"])
    assert body["code"] == 0
    assert body["message"] == "Berhasil"
    assert body["data"] == {
        "reffId": body["responseId"],
        "account": ESCROW,
        "amount": "50000",
        "balanceAfter": "100000",
    }
    balances = await money.balances()
    assert balances["subscribers"] == {PAYER: 100_000}
    assert balances["platform"] == {"escrow": 50_000, "merchant": 0, "corporate": 0}
    inquiry = await money.get("/customer-account-inquiry/", PAYER)
    assert inquiry.json()["data"]["balance"]["availableBalance"] == "100000"


async def test_payment_to_the_merchant_wallet(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=20_000)
    body = (await money.pay(request_id(1), PAYER, "20000", destination=MERCHANT)).json()
    assert body["data"]["balanceAfter"] == "0"
    assert (await money.balances())["platform"]["merchant"] == 20_000


async def test_payment_insufficient_balance(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=49_999)
    response = await money.pay(request_id(1), PAYER, "50000")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["responseId", "code", "message"]
    assert RESPONSE_ID.fullmatch(body["responseId"])
    assert body["code"] == 140001
    assert body["message"] == "Insufficient balance"
    assert (await money.balances())["subscribers"] == {PAYER: 49_999}
    assert await money.ledger() == []


@pytest.mark.parametrize(
    ("payer", "destination"),
    [
        (STRANGER, ESCROW),
        (PAYER, "888000000000009"),
        (PAYER, STRANGER),
        (PAYER, "external:bank"),
        ("external:va", ESCROW),
        (PAYER, "6281299990000"),
    ],
)
async def test_payment_unknown_party(money: MoneyPartner, payer: str, destination: str) -> None:
    await money.customer(PAYER, balance=100_000)
    body = (await money.pay(request_id(1), payer, "1000", destination=destination)).json()
    assert body["code"] == 110005
    assert body["message"] == "Customer not found"
    assert await money.ledger() == []


@pytest.mark.parametrize(
    "amount", ["0", "-5", "1.5", "5e3", "", " 100", "0100", "\uff11\uff10\uff10"]
)
async def test_payment_bad_amount(money: MoneyPartner, amount: str) -> None:
    await money.customer(PAYER, balance=100_000)
    response = await money.pay(request_id(1), PAYER, amount)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400001
    assert body["message"] == "Invalid request: amount"
    assert RESPONSE_ID.fullmatch(body["responseId"])


async def test_payment_amount_must_be_a_string(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=100_000)
    response = await money.post(
        PAYMENT_PATH,
        {
            "requestId": request_id(1),
            "mobileNumber": PAYER,
            "payments": {"pocketId": "2", "amount": 5000, "reference": "T"},
            "destination": ESCROW,
        },
    )
    assert response.json()["message"] == "Invalid request: amount"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"requestId": "short"}, "requestId"),
        ({"requestId": "rq00000000000001"}, "requestId"),
        ({"mobileNumber": None}, "mobileNumber"),
        ({"payments": "50000"}, "payments"),
        ({"payments": {"amount": "1", "reference": "T"}}, "payments.pocketId"),
        ({"payments": {"pocketId": "2", "amount": "1"}}, "payments.reference"),
        ({"destination": ""}, "destination"),
        ({"destination": PAYER}, "destination"),
    ],
)
async def test_payment_invalid_fields(
    money: MoneyPartner, change: dict[str, Any], field: str
) -> None:
    await money.customer(PAYER, balance=100_000)
    body = {
        "requestId": request_id(1),
        "mobileNumber": PAYER,
        "payments": {"pocketId": "2", "amount": "1000", "reference": "T"},
        "destination": ESCROW,
        **change,
    }
    response = await money.post(PAYMENT_PATH, body)
    assert response.status_code == 400
    assert response.json()["message"] == f"Invalid request: {field}"


async def test_a_malformed_request_is_not_remembered(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=100_000)
    assert (await money.pay(request_id(1), PAYER, "abc")).json()["code"] == 400001
    assert (await money.status(request_id(1))).json()["code"] == 150001
    assert (await money.pay(request_id(1), PAYER, "1000")).json()["code"] == 0


async def test_payment_respects_the_destination_cap(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=100_000)
    await money.customer(DRIVER, balance=1_990_000)
    body = (await money.pay(request_id(1), PAYER, "10001", destination=DRIVER)).json()
    assert body["code"] == 140002
    assert body["message"] == "Limit exceeded"
    assert (await money.pay(request_id(2), PAYER, "10000", destination=DRIVER)).json()["code"] == 0
    assert (await money.balances())["subscribers"] == {PAYER: 90_000, DRIVER: 2_000_000}


# P2P


async def test_p2p_answer_shape(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    await money.customer(DRIVER, balance=5_000)
    response = await money.p2p(request_id(1), PAYER, DRIVER, "50000")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["responseId", "code", "data", "message"]
    assert RESPONSE_ID.fullmatch(body["responseId"])
    assert body["code"] == 0
    assert body["message"] == "Berhasil"
    data = body["data"]
    assert list(data) == ["pocketId", "walletTransactions"]
    assert data["pocketId"] == 2
    assert is_int(data["pocketId"])
    lines = data["walletTransactions"]
    reference = lines[0]["reference"]
    assert is_int(reference)
    assert reference > 1_600_000_000_000
    assert lines == [
        {
            "account": PAYER,
            "amount": -50000,
            "reference": reference,
            "balanceBefore": 150000,
            "balanceAfter": 100000,
        },
        {
            "account": DRIVER,
            "amount": 50000,
            "reference": reference,
            "balanceBefore": 5000,
            "balanceAfter": 55000,
        },
    ]
    for line in lines:
        for key in ("amount", "balanceBefore", "balanceAfter"):
            assert is_int(line[key])


async def test_p2p_out_of_escrow_to_driver_and_corporate(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=100_000)
    await money.customer(DRIVER)
    await money.pay(request_id(1), PAYER, "60000", destination=ESCROW)
    driver = (await money.p2p(request_id(2), ESCROW, DRIVER, "45000")).json()
    fee = (await money.p2p(request_id(3), ESCROW, CORPORATE, "5000")).json()
    back = (await money.p2p(request_id(4), ESCROW, PAYER, "10000")).json()
    assert [driver["code"], fee["code"], back["code"]] == [0, 0, 0]
    assert driver["data"]["walletTransactions"][0] == {
        "account": ESCROW,
        "amount": -45000,
        "reference": driver["data"]["walletTransactions"][0]["reference"],
        "balanceBefore": 60000,
        "balanceAfter": 15000,
    }
    balances = await money.balances()
    assert balances["subscribers"] == {PAYER: 50_000, DRIVER: 45_000}
    assert balances["platform"] == {"escrow": 0, "merchant": 0, "corporate": 5_000}


async def test_p2p_from_an_empty_platform_wallet(money: MoneyPartner) -> None:
    await money.customer(DRIVER)
    body = (await money.p2p(request_id(1), CORPORATE, DRIVER, "1")).json()
    assert body == {
        "responseId": body["responseId"],
        "code": 140001,
        "message": "Insufficient balance",
    }


async def test_p2p_refusals(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=3_000_000, premium=True)
    await money.customer(DRIVER)
    assert (await money.p2p(request_id(1), PAYER, STRANGER, "1")).json()["code"] == 110005
    assert (await money.p2p(request_id(2), STRANGER, PAYER, "1")).json()["code"] == 110005
    assert (await money.p2p(request_id(6), PAYER, "external:qris", "1")).json()["code"] == 110005
    assert (await money.p2p(request_id(3), PAYER, DRIVER, "3000001")).json()["code"] == 140001
    over_basic_cap = await money.p2p(request_id(4), PAYER, DRIVER, "2000001")
    assert over_basic_cap.json()["code"] == 140002
    assert (await money.p2p(request_id(5), PAYER, DRIVER, "1.0")).json()["code"] == 400001
    assert await money.ledger() == []


async def test_premium_cap_is_higher(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=100_000, premium=True)
    await money.control("POST", f"/wallets/{ESCROW}/balance", {"balance": 30_000_000})
    assert (await money.p2p(request_id(1), ESCROW, PAYER, "19900000")).json()["code"] == 0
    assert (await money.p2p(request_id(2), ESCROW, PAYER, "1")).json()["code"] == 140002


async def test_platform_wallets_have_no_cap(money: MoneyPartner) -> None:
    await money.control("POST", f"/wallets/{ESCROW}/balance", {"balance": 50_000_000})
    assert (await money.p2p(request_id(1), ESCROW, CORPORATE, "50000000")).json()["code"] == 0
    assert (await money.balances())["platform"]["corporate"] == 50_000_000


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pocketId": 2}, "pocketId"),
        ({"pocketId": "1"}, "pocketId"),
        ({"note": 5}, "note"),
        ({"amount": None}, "amount"),
        ({"destination": 81234567890}, "destination"),
    ],
)
async def test_p2p_invalid_fields(money: MoneyPartner, change: dict[str, Any], field: str) -> None:
    await money.customer(PAYER, balance=100_000)
    await money.customer(DRIVER)
    body = {
        "requestId": request_id(1),
        "mobileNumber": PAYER,
        "destination": DRIVER,
        "amount": "100",
        "pocketId": "2",
        **change,
    }
    response = await money.post(P2P_PATH, body)
    assert response.status_code == 400
    assert response.json()["message"] == f"Invalid request: {field}"


# idempotency


async def test_repeated_request_id_answers_the_first_answer(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    await money.customer(DRIVER)
    first = await money.p2p(request_id(1), PAYER, DRIVER, "50000")
    again = await money.p2p(request_id(1), PAYER, DRIVER, "50000")
    assert again.status_code == first.status_code
    assert again.content == first.content
    ledger = await money.ledger()
    assert [(entry["requestId"], entry["type"]) for entry in ledger] == [(request_id(1), "P2P")]
    assert (await money.balances())["subscribers"] == {PAYER: 100_000, DRIVER: 50_000}


async def test_repeated_request_id_with_another_body_still_answers_the_first(
    money: MoneyPartner,
) -> None:
    await money.customer(PAYER, balance=150_000)
    await money.customer(DRIVER)
    first = await money.p2p(request_id(1), PAYER, DRIVER, "50000")
    other = await money.p2p(request_id(1), DRIVER, PAYER, "1")
    on_another_path = await money.pay(request_id(1), PAYER, "70000")
    assert other.json() == first.json()
    assert on_another_path.json() == first.json()
    assert len(await money.ledger()) == 1


async def test_repeated_rejection_is_the_same_rejection(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=10)
    first = (await money.pay(request_id(1), PAYER, "50000")).json()
    await money.http.post(f"/_sandbox/customers/{PAYER}/balance", json={"balance": 100_000})
    again = (await money.pay(request_id(1), PAYER, "50000")).json()
    assert again == first
    assert again["code"] == 140001
    status = (await money.status(request_id(1))).json()
    assert status["data"]["status"] == "FAILED"
    assert status["data"]["message"] == "Insufficient balance"


async def test_repeats_are_logged(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    await money.http.delete("/_sandbox/requests")
    await money.pay(request_id(1), PAYER, "1000")
    await money.pay(request_id(1), PAYER, "1000")
    log = (await money.http.get("/_sandbox/requests")).json()
    assert [(e["path"], e["requestId"], e["code"]) for e in log] == [
        (PAYMENT_PATH, request_id(1), 0),
        (PAYMENT_PATH, request_id(1), 0),
    ]
    assert log[0]["mobileNumber"] == "0812****7890"


# auth and faults apply to money paths


async def test_money_calls_are_signed(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    response = await money.post(P2P_PATH, {"requestId": request_id(1)}, secret="not-the-secret")
    assert response.status_code == 401
    assert response.json() == {"code": 401001, "message": "Invalid signature"}
    response = await money.post(P2P_PATH, {"requestId": request_id(1)}, token="nope")
    assert response.json() == {"code": 401002, "message": "Invalid or expired token"}


async def test_a_faulted_money_call_is_not_executed(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    armed = await money.http.post(
        "/_sandbox/faults", json={"path": PAYMENT_PATH, "kind": "http_500"}
    )
    assert armed.status_code == 200
    assert (await money.pay(request_id(1), PAYER, "1000")).status_code == 500
    assert (await money.status(request_id(1))).json()["code"] == 150001
    assert (await money.pay(request_id(1), PAYER, "1000")).json()["code"] == 0


async def test_a_delayed_money_call_is_executed(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    await money.http.post(
        "/_sandbox/faults", json={"path": PAYMENT_PATH, "kind": "delay", "delaySeconds": 0.05}
    )
    assert (await money.pay(request_id(1), PAYER, "1000")).json()["code"] == 0
    assert (await money.balances())["subscribers"] == {PAYER: 149_000}


# the journal


async def test_journal_entries(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    await money.customer(DRIVER)
    await money.pay(request_id(1), PAYER, "50000")
    await money.p2p(request_id(2), ESCROW, DRIVER, "40000")
    ledger = await money.ledger()
    assert [{k: v for k, v in entry.items() if k != "time"} for entry in ledger] == [
        {
            "seq": 1,
            "requestId": request_id(1),
            "type": "PAYMENT",
            "from": PAYER,
            "to": ESCROW,
            "amount": 50000,
            "fee": 0,
        },
        {
            "seq": 2,
            "requestId": request_id(2),
            "type": "P2P",
            "from": ESCROW,
            "to": DRIVER,
            "amount": 40000,
            "fee": 0,
        },
    ]
    assert re.fullmatch(r"[0-9-]{10}T[0-9:.]{12}Z", ledger[0]["time"])


async def test_money_is_conserved_and_the_journal_explains_every_balance(
    money: MoneyPartner,
) -> None:
    await money.customer(PAYER, balance=500_000)
    await money.customer(DRIVER, balance=1_000)
    await money.control("POST", f"/wallets/{CORPORATE}/balance", {"balance": 70_000})
    start = await money.balances()
    total = money_total(start)
    calls = [
        money.pay(request_id(1), PAYER, "80000"),
        money.p2p(request_id(2), ESCROW, DRIVER, "60000"),
        money.p2p(request_id(3), ESCROW, CORPORATE, "15000"),
        money.p2p(request_id(4), ESCROW, PAYER, "5000"),
        money.p2p(request_id(5), CORPORATE, DRIVER, "20000"),
        money.p2p(request_id(6), DRIVER, PAYER, "999999"),
        money.pay(request_id(7), DRIVER, "1000", destination=MERCHANT),
    ]
    for call in calls:
        await call
        assert money_total(await money.balances()) == total

    end = await money.balances()
    replayed = {**start["subscribers"], **{k: v for k, v in start["platform"].items()}}
    names = {ESCROW: "escrow", MERCHANT: "merchant", CORPORATE: "corporate"}
    for entry in await money.ledger():
        moved = entry["amount"] + entry["fee"]
        replayed[names.get(entry["from"], entry["from"])] -= moved
        replayed[names.get(entry["to"], entry["to"])] += moved
    assert replayed == {**end["subscribers"], **end["platform"]}
    assert end["platform"]["escrow"] == 0


# control views of sync transactions


async def test_transactions_view(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    reply = (await money.pay(request_id(1), PAYER, "50000", reference="TX-9")).json()
    await money.pay(request_id(2), PAYER, "999999")
    listed = await money.control("GET", "/transactions")
    assert [(t["requestId"], t["status"], t["code"]) for t in listed] == [
        (request_id(1), "SUCCESS", 0),
        (request_id(2), "FAILED", 140001),
    ]
    one = await money.transaction(request_id(1))
    assert one == listed[0]
    assert one["type"] == "PAYMENT"
    assert one["reffId"] == reply["responseId"]
    assert one["amount"] == 50000
    assert one["mobileNumber"] == PAYER
    assert one["destination"] == ESCROW
    assert one["details"] == {"reference": "TX-9"}
    assert one["answer"] == reply
    missing = await money.http.get(f"/_sandbox/transactions/{request_id(3)}")
    assert missing.status_code == 404


async def test_platform_wallet_balance_control(money: MoneyPartner) -> None:
    wallets = await money.control("GET", "/wallets")
    assert wallets == [
        {"account": ESCROW, "name": "escrow", "balance": 0},
        {"account": MERCHANT, "name": "merchant", "balance": 0},
        {"account": CORPORATE, "name": "corporate", "balance": 0},
    ]
    set_by_number = await money.control("POST", f"/wallets/{MERCHANT}/balance", {"balance": 7})
    assert set_by_number == {"account": MERCHANT, "name": "merchant", "balance": 7}
    await money.control("POST", "/wallets/corporate/balance", {"balance": 9})
    assert (await money.balances())["platform"] == {"escrow": 0, "merchant": 7, "corporate": 9}
    unknown = await money.http.post("/_sandbox/wallets/123/balance", json={"balance": 1})
    assert unknown.status_code == 404
    negative = await money.http.post(f"/_sandbox/wallets/{ESCROW}/balance", json={"balance": -1})
    assert negative.status_code == 400


async def test_balances_shape(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=10)
    assert await money.balances() == {
        "subscribers": {PAYER: 10},
        "platform": {"escrow": 0, "merchant": 0, "corporate": 0},
        "external": {"bank": 0, "qris": 0, "va": 0, "retail": 0},
        "externalFlows": {name: {"in": 0, "out": 0} for name in ("bank", "qris", "va", "retail")},
    }


async def test_reset_forgets_money(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=150_000)
    await money.pay(request_id(1), PAYER, "50000")
    assert (await money.http.post("/_sandbox/reset")).json() == {"reset": True}
    assert await money.control("GET", "/transactions") == []
    assert await money.ledger() == []
    assert (await money.balances())["platform"] == {"escrow": 0, "merchant": 0, "corporate": 0}

"""Callbacks to a real receiver: signature over the raw body, retries, the callback log,
top-ups, and resending a final callback.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import datetime
from typing import Any

import pytest

from kaspro_sandbox import RunningSandbox, SandboxConfig, start_sandbox
from kaspro_sandbox.runner import bind_socket

from .callback_receiver import CallbackReceiver, Received
from .partner_client import (
    FakeClock,
    MoneyPartner,
    fast_money_config,
    qris_payload,
    request_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

NUMBER = "081234567890"
BODY_KEYS = [
    "reffId",
    "requestId",
    "status",
    "code",
    "message",
    "amount",
    "serviceFee",
    "mobileNumber",
    "type",
    "timestamp",
]


@pytest.fixture(scope="module")
def sandbox_config(clock: FakeClock) -> SandboxConfig:
    return fast_money_config(clock)


@pytest.fixture
def unhooked(
    money: MoneyPartner, receiver: CallbackReceiver, sandbox: RunningSandbox
) -> CallbackReceiver:
    """A clean receiver that the freshly reset sandbox does not call back (yet)."""
    receiver.clear()
    sandbox.state.callback_url = None
    return receiver


def assert_signed_now(received: Received) -> None:
    assert received.headers["content-type"] == "application/json"
    timestamp = received.headers["kaspro-callback-timestamp"]
    assert timestamp.isdigit()
    assert abs(int(timestamp) - time.time()) <= 2
    assert received.signature_is_valid()


async def callback_log(money: MoneyPartner) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await money.control("GET", "/callbacks")
    return result


# final statuses


async def test_success_callback(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(NUMBER, balance=150_000)
    reply = (await money.bank_transfer(request_id(1), NUMBER, "50000")).json()
    [received] = await hooked.wait_for(1)
    assert_signed_now(received)
    body = received.body
    assert list(body) == BODY_KEYS
    assert body == {
        "reffId": reply["data"]["reffId"],
        "requestId": request_id(1),
        "status": "SUCCESS",
        "code": 0,
        "message": "Berhasil",
        "amount": "50000",
        "serviceFee": "0",
        "mobileNumber": NUMBER,
        "type": "BANK_TRANSFER",
        "timestamp": body["timestamp"],
    }
    assert isinstance(body["timestamp"], int)
    assert abs(body["timestamp"] - time.time()) <= 2
    assert (await money.transaction(request_id(1)))["callback"] == body


async def test_failure_callback_carries_the_refunded_amount(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.control("POST", "/settings", {"cash_out_fee": 2_500})
    await money.bank_transfer(request_id(1), NUMBER, "50000", account_number="770000")
    [received] = await hooked.wait_for(1)
    assert received.signature_is_valid()
    body = received.body
    assert body["status"] == "FAILED"
    assert body["code"] == 150002
    assert body["message"] == "Transaction failed"
    assert body["amount"] == "50000"
    assert body["serviceFee"] == "2500"
    assert (await money.balances())["subscribers"] == {NUMBER: 150_000}


@pytest.mark.parametrize(
    ("kind", "call"),
    [
        ("RETAIL_WITHDRAWAL", "retail"),
        ("QRIS", "qris"),
    ],
)
async def test_callback_types(
    money: MoneyPartner, hooked: CallbackReceiver, kind: str, call: str
) -> None:
    await money.customer(NUMBER, balance=150_000)
    if call == "retail":
        await money.retail_withdrawal(request_id(1), NUMBER, "10000")
    else:
        await money.qris(request_id(1), NUMBER, "10000", qris_payload("KOPI KENANGAN"))
    [received] = await hooked.wait_for(1)
    assert received.body["type"] == kind
    assert received.body["status"] == "SUCCESS"


async def test_no_callback_url_no_callback(money: MoneyPartner, unhooked: CallbackReceiver) -> None:
    receiver = unhooked
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    await money.wait_for_status(request_id(1), "SUCCESS")
    await asyncio.sleep(0.05)
    assert receiver.received == []
    assert await callback_log(money) == []
    assert (await money.transaction(request_id(1)))["callback"]["status"] == "SUCCESS"


async def test_sync_transfers_send_no_callback(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.pay(request_id(1), NUMBER, "1000")
    await money.p2p(request_id(2), NUMBER, "888000000000003", "1000")
    await asyncio.sleep(0.05)
    assert hooked.received == []


# retries and the log


async def test_retries_until_a_2xx(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    hooked.script = [500, 503, 200]
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    tries = await hooked.wait_for(3)
    await asyncio.sleep(0.1)
    assert len(hooked.received) == 3
    assert [t.answered for t in tries] == [500, 503, 200]
    assert len({t.raw_body for t in tries}) == 1
    for received in tries:
        assert_signed_now(received)
    log = await callback_log(money)
    assert [(e["attempt"], e["statusCode"], e["error"]) for e in log] == [
        (1, 500, None),
        (2, 503, None),
        (3, 200, None),
    ]
    for entry in log:
        assert entry["url"] == hooked.url
        assert entry["requestId"] == request_id(1)
        assert entry["body"] == tries[0].body


async def test_gives_up_after_five_tries(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    hooked.script = [500] * 10
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    await hooked.wait_for(5)
    await asyncio.sleep(0.4)
    assert len(hooked.received) == 5
    log = await callback_log(money)
    assert [e["attempt"] for e in log] == [1, 2, 3, 4, 5]
    assert {e["statusCode"] for e in log} == {500}


async def test_backoff_doubles(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    hooked.script = [500, 500, 500, 200]
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    await hooked.wait_for(4)
    log = await callback_log(money)
    times = [datetime.fromisoformat(e["time"]).timestamp() for e in log]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # base 0.02 s: waits of 0.02, 0.04, 0.08 (plus the time each try takes)
    assert gaps[0] >= 0.019
    assert gaps[1] >= 0.039
    assert gaps[2] >= 0.079
    assert sum(gaps) < 1.0


async def test_transport_errors_are_logged_and_retried(
    money: MoneyPartner, unhooked: CallbackReceiver
) -> None:
    probe = bind_socket("127.0.0.1", 0)
    closed_port = probe.getsockname()[1]
    probe.close()
    url = f"http://127.0.0.1:{closed_port}/callbacks/kaspro"
    assert await money.control("POST", "/callback-url", {"url": url}) == {"url": url}
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    deadline = time.monotonic() + 3
    while len(await callback_log(money)) < 5:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    log = await callback_log(money)
    assert [e["attempt"] for e in log] == [1, 2, 3, 4, 5]
    assert all(e["statusCode"] is None and e["error"] for e in log)
    assert "ConnectError" in log[0]["error"]


async def test_callback_log_can_be_cleared(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    await hooked.wait_for(1)
    assert (await money.http.delete("/_sandbox/callbacks")).json() == {"cleared": 1}
    assert await callback_log(money) == []


# the callback URL


async def test_callback_url_control(money: MoneyPartner, unhooked: CallbackReceiver) -> None:
    receiver = unhooked
    assert await money.control("GET", "/callback-url") == {"url": None}
    assert await money.control("POST", "/callback-url", {"url": receiver.url}) == {
        "url": receiver.url
    }
    assert (await money.control("GET", "/settings"))["callback_url"] == receiver.url
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    await receiver.wait_for(1)
    assert await money.control("POST", "/callback-url", {"url": None}) == {"url": None}


async def test_reset_keeps_the_callback_url(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.control("POST", "/settings", {"auto_complete": False})
    await money.reset()
    assert await money.control("GET", "/callback-url") == {"url": hooked.url}
    assert (await money.control("GET", "/settings"))["auto_complete"] is True


@pytest.mark.parametrize("url", ["ftp://x/y", "not a url", 5, "http://"])
async def test_bad_callback_url_is_400(money: MoneyPartner, url: object) -> None:
    response = await money.http.post("/_sandbox/callback-url", json={"url": url})
    assert response.status_code == 400


async def test_callback_url_and_secret_from_the_config(unhooked: CallbackReceiver) -> None:
    receiver = unhooked
    config = fast_money_config(
        FakeClock(), callback_url=receiver.url, callback_secret="another-secret"
    )
    other = await start_sandbox(config)
    async with other, MoneyPartner.connect(other.base_url) as partner:
        await partner.customer(NUMBER, balance=150_000)
        await partner.bank_transfer(request_id(1), NUMBER, "50000")
        [received] = await receiver.wait_for(1)
    assert received.signature_is_valid("another-secret")
    assert not received.signature_is_valid()


# top-ups


async def test_topup_by_virtual_account(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(NUMBER, balance=1_000)
    answer = await money.control(
        "POST",
        "/topup",
        {"mobileNumber": NUMBER, "amount": 50_000, "channel": "VA", "vaNumber": "8808181234567890"},
    )
    [received] = await hooked.wait_for(1)
    assert_signed_now(received)
    assert received.body == answer
    assert list(answer) == [*BODY_KEYS, "channel", "vaNumber"]
    assert answer["requestId"].startswith("TOPUP")
    assert answer == {
        "reffId": answer["reffId"],
        "requestId": answer["requestId"],
        "status": "SUCCESS",
        "code": 0,
        "message": "Berhasil",
        "amount": "50000",
        "serviceFee": "0",
        "mobileNumber": NUMBER,
        "type": "TOPUP",
        "timestamp": answer["timestamp"],
        "channel": "VA",
        "vaNumber": "8808181234567890",
    }
    balances = await money.balances()
    assert balances["subscribers"] == {NUMBER: 51_000}
    assert balances["external"]["va"] == 50_000
    [entry] = await money.ledger()
    assert (entry["type"], entry["from"], entry["to"], entry["amount"]) == (
        "TOPUP",
        "external:va",
        NUMBER,
        50_000,
    )
    assert entry["requestId"] == answer["requestId"]
    status = (await money.status(answer["requestId"])).json()["data"]
    assert status["type"] == "TOPUP"
    assert status["status"] == "SUCCESS"
    assert status["reffId"] == answer["reffId"]


async def test_topup_at_a_retail_outlet(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(NUMBER)
    answer = await money.control(
        "POST",
        "/topup",
        {
            "mobileNumber": "+6281234567890",
            "amount": 20_000,
            "channel": "ALFAMART",
            "paymentCode": "3118081234567890",
        },
    )
    assert answer["channel"] == "ALFAMART"
    assert answer["paymentCode"] == "3118081234567890"
    assert "vaNumber" not in answer
    assert (await hooked.wait_for(1))[0].body == answer
    flows = (await money.balances())["externalFlows"]["retail"]
    assert flows == {"in": 20_000, "out": 0}


async def test_topup_over_the_cap_is_409(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(NUMBER, balance=1_960_000)
    response = await money.http.post(
        "/_sandbox/topup",
        json={"mobileNumber": NUMBER, "amount": 50_000, "channel": "VA", "vaNumber": "1"},
    )
    assert response.status_code == 409
    assert "cap" in response.json()["error"]
    assert (await money.balances())["subscribers"] == {NUMBER: 1_960_000}
    assert await money.ledger() == []
    await asyncio.sleep(0.05)
    assert hooked.received == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"mobileNumber": "081299990000", "channel": "VA", "vaNumber": "1"}, 404),
        ({"channel": "BCA", "vaNumber": "1"}, 400),
        ({"channel": "VA"}, 400),
        ({"channel": "VA", "paymentCode": "1"}, 400),
        ({"channel": "INDOMARET", "vaNumber": "1"}, 400),
        ({"channel": "VA", "vaNumber": "88-1"}, 400),
        ({"channel": "VA", "vaNumber": "1", "amount": "50000"}, 400),
        ({"channel": "VA", "vaNumber": "1", "amount": 0}, 400),
    ],
)
async def test_bad_topups(money: MoneyPartner, body: dict[str, Any], status: int) -> None:
    await money.customer(NUMBER)
    sent = {"mobileNumber": NUMBER, "amount": 50_000, **body}
    response = await money.http.post("/_sandbox/topup", json=sent)
    assert response.status_code == status
    assert "error" in response.json()


# resending


async def test_resend_callback_delivers_a_duplicate(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    [first] = await hooked.wait_for(1)
    resent = await money.control("POST", f"/transactions/{request_id(1)}/resend-callback")
    assert resent == first.body
    second = (await hooked.wait_for(2))[1]
    assert second.raw_body == first.raw_body
    assert second.signature_is_valid()
    assert (await money.balances())["subscribers"] == {NUMBER: 100_000}


async def test_resend_a_topup_callback(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(NUMBER)
    answer = await money.control(
        "POST", "/topup", {"mobileNumber": NUMBER, "amount": 1, "channel": "VA", "vaNumber": "9"}
    )
    await money.control("POST", f"/transactions/{answer['requestId']}/resend-callback")
    received = await hooked.wait_for(2)
    assert [r.body for r in received] == [answer, answer]
    assert (await money.balances())["subscribers"] == {NUMBER: 1}


async def test_resend_needs_a_final_status_and_a_url(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.control("POST", "/settings", {"auto_complete": False})
    await money.bank_transfer(request_id(1), NUMBER, "50000")
    await money.pay(request_id(2), NUMBER, "1000")
    url = f"/_sandbox/transactions/{request_id(1)}/resend-callback"
    pending = await money.http.post(url)
    assert pending.status_code == 409
    sync = await money.http.post(f"/_sandbox/transactions/{request_id(2)}/resend-callback")
    assert sync.status_code == 409
    missing = await money.http.post(f"/_sandbox/transactions/{request_id(3)}/resend-callback")
    assert missing.status_code == 404
    await money.control("POST", f"/transactions/{request_id(1)}/complete")
    await hooked.wait_for(1)
    await money.control("POST", "/callback-url", {"url": None})
    no_url = await money.http.post(url)
    assert no_url.status_code == 409
    assert no_url.json() == {"error": "no callback URL is set"}


async def test_manual_settlement_calls_back(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(NUMBER, balance=150_000)
    await money.control("POST", "/settings", {"auto_complete": False})
    await money.retail_withdrawal(request_id(1), NUMBER, "50000")
    await asyncio.sleep(0.1)
    assert hooked.received == []
    await money.control(
        "POST", f"/transactions/{request_id(1)}/fail", {"message": "Kode penarikan kedaluwarsa"}
    )
    [received] = await hooked.wait_for(1)
    assert received.body["status"] == "FAILED"
    assert received.body["message"] == "Kode penarikan kedaluwarsa"
    assert json.loads(received.raw_body)["type"] == "RETAIL_WITHDRAWAL"

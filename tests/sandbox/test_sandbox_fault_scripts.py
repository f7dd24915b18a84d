"""Scripted chains per requestId, and callback faults seen by a real receiver."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from kaspro_sandbox import SandboxConfig

from .callback_receiver import CallbackReceiver, Received
from .partner_client import (
    BANK_TRANSFER_PATH,
    P2P_PATH,
    QRIS_PATH,
    STATUS_PATH,
    FakeClock,
    MoneyPartner,
    fast_money_config,
    qris_payload,
    request_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAYER = "081234567890"
DRIVER = "085712345678"
START = 150_000
TOPUP_PATH = "/_sandbox/topup"


@pytest.fixture(scope="module")
def sandbox_config(clock: FakeClock) -> SandboxConfig:
    return fast_money_config(clock)


# helpers


async def script(money: MoneyPartner, rid: str, steps: Any) -> dict[str, Any]:
    result: dict[str, Any] = await money.control(
        "POST", "/faults/script", {"requestId": rid, "steps": steps}
    )
    return result


async def arm(money: MoneyPartner, **rule: Any) -> dict[str, Any]:
    result: dict[str, Any] = await money.control("POST", "/faults", rule)
    return result


def p2p_body(rid: str, amount: str = "1000") -> dict[str, Any]:
    return {
        "requestId": rid,
        "mobileNumber": PAYER,
        "destination": DRIVER,
        "amount": amount,
        "pocketId": "2",
    }


async def status_of(money: MoneyPartner, rid: str) -> dict[str, Any]:
    body: dict[str, Any] = (await money.status(rid)).json()
    return body


async def stays(money: MoneyPartner, rid: str, status: str, seconds: float = 0.2) -> None:
    """The transaction is still `status` after `seconds` (longer than the 0.05 s timer)."""
    await asyncio.sleep(seconds)
    assert (await money.transaction(rid))["status"] == status


async def settled_without_callback(receiver: CallbackReceiver, seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)
    assert receiver.received == []


async def callback_log(money: MoneyPartner) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await money.control("GET", "/callbacks")
    return result


# scripts


async def test_timeout_then_in_process_then_success(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    """The classic chain for a cash-out: the answer is lost, the first inquiry says
    PENDING, the second SUCCESS (and the callback goes then).
    """
    await money.customer(PAYER, balance=START)
    rid = request_id(1)
    armed = await script(money, rid, "timeout_after:0.3|in_process|success")
    assert armed == {
        "requestId": rid,
        "steps": ["timeout_after:0.3", "in_process", "success"],
        "used": 0,
        "next": "timeout_after:0.3",
    }

    with pytest.raises(httpx.ReadTimeout):
        await money.post(
            BANK_TRANSFER_PATH,
            {
                "requestId": rid,
                "mobileNumber": PAYER,
                "bankCode": "014",
                "accountNumber": "1234567890",
                "accountName": "SITI RAHAYU",
                "amount": "50000",
            },
            timeout=0.05,
        )
    # Carried out, and kept PENDING by the script (no completion timer).
    assert (await money.balances())["subscribers"][PAYER] == START - 50000
    await stays(money, rid, "PENDING")
    assert (await money.transaction(rid))["held"] is True

    assert (await status_of(money, rid))["data"]["status"] == "PENDING"
    await settled_without_callback(hooked, 0.05)
    success = await status_of(money, rid)
    assert success["data"]["status"] == "SUCCESS"
    [received] = await hooked.wait_for(1)
    assert received.body["status"] == "SUCCESS"
    # Used up: the next inquiry is answered normally.
    assert (await status_of(money, rid))["data"]["status"] == "SUCCESS"
    [listed] = await money.control("GET", "/faults/script")
    assert (listed["used"], listed["next"]) == (3, None)
    entries = [e for e in await money.control("GET", "/requests") if e["requestId"] == rid]
    assert [(e["path"], e["scriptStep"], e["fault"]) for e in entries] == [
        (BANK_TRANSFER_PATH, "timeout_after:0.3", "timeout_after"),
        (STATUS_PATH, "in_process", "in_process"),
        (STATUS_PATH, "success", None),
        (STATUS_PATH, None, None),
    ]


async def test_script_steps_are_consumed_by_status_inquiries_by_reff_id(
    money: MoneyPartner,
) -> None:
    await money.customer(PAYER, balance=START)
    rid = request_id(1)
    await script(money, rid, ["in_process", "success"])
    reply = (await money.bank_transfer(rid, PAYER, "50000")).json()
    assert reply["code"] == 1
    await stays(money, rid, "PENDING")
    by_reff = (await money.status(reff_id=reply["data"]["reffId"])).json()
    assert by_reff["data"]["status"] == "SUCCESS"


async def test_retries_consume_steps_until_one_is_carried_out(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=START)
    await money.customer(DRIVER)
    rid = request_id(1)
    await script(money, rid, ["timeout_before:0.3", "http_503", "reset", "success"])

    with pytest.raises(httpx.ReadTimeout):
        await money.post(P2P_PATH, p2p_body(rid), timeout=0.05)
    assert (await money.post(P2P_PATH, p2p_body(rid))).status_code == 503
    with pytest.raises(httpx.TransportError):
        await money.post(P2P_PATH, p2p_body(rid))
    assert await money.ledger() == []
    assert (await status_of(money, rid))["code"] == 150001  # steps used up: a normal answer
    assert (await money.post(P2P_PATH, p2p_body(rid))).json()["code"] == 0
    assert len(await money.ledger()) == 1


async def test_in_process_on_a_sync_transfer_then_a_stale_inquiry(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=START)
    await money.customer(DRIVER)
    rid = request_id(1)
    await script(money, rid, "in_process|in_process")

    reply = (await money.post(P2P_PATH, p2p_body(rid))).json()
    assert (reply["code"], reply["message"]) == (1, "In Process")
    assert len(await money.ledger()) == 1
    stale = (await status_of(money, rid))["data"]
    assert (stale["status"], stale["message"]) == ("PENDING", "In Process")
    assert (await status_of(money, rid))["data"]["status"] == "SUCCESS"


async def test_fail_step_settles_failed_and_refunds(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await money.customer(PAYER, balance=START)
    rid = request_id(1)
    await script(money, rid, "timeout|fail")
    with pytest.raises(httpx.ReadTimeout):
        await money.post(
            QRIS_PATH,
            {
                "requestId": rid,
                "mobileNumber": PAYER,
                "amount": "15000",
                "qrisPayload": qris_payload("WARUNG BU SITI"),
            },
            timeout=0.05,
        )
    assert (await money.balances())["subscribers"][PAYER] == START - 15000
    # A retry consumes "fail": it gets the first answer, and the transfer fails.
    retry = (await money.qris(rid, PAYER, "15000", qris_payload("WARUNG BU SITI"))).json()
    assert retry["code"] == 1
    failed = (await status_of(money, rid))["data"]
    assert failed["status"] == "FAILED"
    assert (await money.balances())["subscribers"][PAYER] == START
    [received] = await hooked.wait_for(1)
    assert received.body["status"] == "FAILED"


async def test_success_as_the_only_step_settles_at_once(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await money.customer(PAYER, balance=START)
    await script(money, request_id(1), ["success"])
    assert (await money.bank_transfer(request_id(1), PAYER, "1000")).json()["code"] == 1
    assert (await money.transaction(request_id(1)))["status"] == "SUCCESS"
    await hooked.wait_for(1)


async def test_a_script_wins_over_the_rules(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=START)
    await money.customer(DRIVER)
    await arm(money, path=P2P_PATH, kind="http_500", probability=1)
    await script(money, request_id(1), ["success"])
    assert (await money.post(P2P_PATH, p2p_body(request_id(1)))).json()["code"] == 0
    assert (await money.post(P2P_PATH, p2p_body(request_id(2)))).status_code == 500
    [rule] = await money.control("GET", "/faults")
    assert rule["matched"] == 1  # the scripted call drew nothing


async def test_scripts_count_in_the_stats(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=START)
    await script(money, request_id(1), "http_502|in_process|success")
    await money.status(request_id(1))
    await money.status(request_id(1))
    await money.status(request_id(1))
    stats = await money.control("GET", "/faults/stats")
    assert stats["scriptSteps"] == 3
    assert stats["byKind"]["http_502"] == 1
    assert stats["byKind"]["in_process"] == 1
    assert stats["total"] == 2


async def test_scripts_are_listed_replaced_and_cleared(money: MoneyPartner) -> None:
    await script(money, request_id(1), "http_500")
    await script(money, request_id(1), "http_503|success")
    await script(money, request_id(2), "reset")
    listed = await money.control("GET", "/faults/script")
    assert [(s["requestId"], s["steps"]) for s in listed] == [
        (request_id(1), ["http_503", "success"]),
        (request_id(2), ["reset"]),
    ]
    assert (await money.http.delete("/_sandbox/faults/script")).json() == {"cleared": 2}
    await script(money, request_id(3), "reset")
    await money.http.delete("/_sandbox/faults")  # clears scripts too
    assert await money.control("GET", "/faults/script") == []


@pytest.mark.parametrize(
    "body",
    [
        {"requestId": request_id(1), "steps": []},
        {"requestId": request_id(1), "steps": ""},
        {"requestId": request_id(1), "steps": "success|explode"},
        {"requestId": request_id(1), "steps": ["timeout_after:soon"]},
        {"requestId": request_id(1), "steps": ["latency:-1"]},
        {"requestId": request_id(1), "steps": ["in_process_forever"]},
        {"requestId": request_id(1), "steps": [1]},
        {"requestId": "", "steps": ["success"]},
        {"steps": ["success"]},
        {"requestId": request_id(1), "steps": ["success"], "times": 2},
    ],
)
async def test_invalid_scripts_are_400(money: MoneyPartner, body: dict[str, Any]) -> None:
    response = await money.http.post("/_sandbox/faults/script", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


# callback faults


def transfer_rule(kind: str, **extra: Any) -> dict[str, Any]:
    return {"path": BANK_TRANSFER_PATH, "kind": kind, **extra}


async def cash_out(money: MoneyPartner, rid: str = request_id(1)) -> dict[str, Any]:
    await money.customer(PAYER, balance=START)
    reply: dict[str, Any] = (await money.bank_transfer(rid, PAYER, "50000")).json()
    return reply


async def test_callback_duplicate(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await arm(money, **transfer_rule("callback_duplicate", copies=3))
    await cash_out(money)
    received = await hooked.wait_for(3)
    await asyncio.sleep(0.1)
    assert len(hooked.received) == 3
    assert len({r.raw_body for r in received}) == 1
    assert all(r.signature_is_valid() for r in received)
    log = await callback_log(money)
    assert [(e["attempt"], e["fault"]) for e in log] == [(1, "callback_duplicate")] * 3
    entries = await money.control("GET", "/requests")
    assert entries[-1]["callbackFault"] == "callback_duplicate"
    assert (await money.transaction(request_id(1)))["callbackFault"] == "callback_duplicate"


async def test_callback_late(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await arm(money, **transfer_rule("callback_late", delaySeconds=0.4))
    await cash_out(money)
    await money.wait_for_status(request_id(1), "SUCCESS")
    settled_at = time.monotonic()
    await asyncio.sleep(0.1)
    assert hooked.received == []
    [received] = await hooked.wait_for(1)
    assert time.monotonic() - settled_at >= 0.3
    assert received.body["status"] == "SUCCESS"
    assert received.signature_is_valid()


async def test_callback_reorder_sends_a_stale_pending_after_the_final(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await arm(money, **transfer_rule("callback_reorder"))
    reply = await cash_out(money)
    final, stale = await hooked.wait_for(2)
    assert final.body["status"] == "SUCCESS"
    assert stale.body == {
        **final.body,
        "status": "PENDING",
        "code": 1,
        "message": "In Process",
        "timestamp": stale.body["timestamp"],
    }
    assert stale.body["timestamp"] <= final.body["timestamp"]
    assert stale.body["reffId"] == reply["data"]["reffId"]
    assert stale.signature_is_valid()
    assert (await status_of(money, request_id(1)))["data"]["status"] == "SUCCESS"


async def test_callback_unsigned(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await arm(money, **transfer_rule("callback_unsigned"))
    hooked.script.extend([401] * 5)
    await cash_out(money)
    received = await hooked.wait_for(5)
    assert all("kaspro-callback-signature" not in r.headers for r in received)
    assert all(r.headers["kaspro-callback-timestamp"].isdigit() for r in received)
    await asyncio.sleep(0.05)
    log = await callback_log(money)
    assert [(e["statusCode"], e["fault"]) for e in log] == [(401, "callback_unsigned")] * 5


async def test_callback_bad_signature(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await arm(money, **transfer_rule("callback_bad_signature"))
    hooked.script.append(401)
    await cash_out(money)
    received: list[Received] = await hooked.wait_for(2)
    assert [r.answered for r in received] == [401, 200]  # the receiver let the second in
    for one in received:
        assert len(one.headers["kaspro-callback-signature"]) == 64
        assert not one.signature_is_valid()


async def test_callback_drop(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await arm(money, **transfer_rule("callback_drop"))
    await cash_out(money)
    await money.wait_for_status(request_id(1), "SUCCESS")
    await settled_without_callback(hooked)
    [entry] = await callback_log(money)
    assert (entry["attempt"], entry["statusCode"], entry["fault"]) == (0, None, "callback_drop")
    assert entry["error"] == "not sent: callback_drop"
    # The partner finds out by asking.
    assert (await status_of(money, request_id(1)))["data"]["status"] == "SUCCESS"
    # A resend by hand is not subject to the fault.
    await money.control("POST", f"/transactions/{request_id(1)}/resend-callback")
    [received] = await hooked.wait_for(1)
    assert received.signature_is_valid()


async def test_callback_faults_on_top_ups(money: MoneyPartner, hooked: CallbackReceiver) -> None:
    await money.customer(PAYER)
    await arm(money, path=TOPUP_PATH, kind="callback_duplicate")
    body = await money.control(
        "POST",
        "/topup",
        {"mobileNumber": PAYER, "amount": 20000, "channel": "VA", "vaNumber": "8808081234567890"},
    )
    first, second = await hooked.wait_for(2)
    assert first.raw_body == second.raw_body
    assert first.body == body
    assert (await money.transaction(body["requestId"]))["callbackFault"] == "callback_duplicate"


async def test_callback_rules_with_a_probability_and_a_star(
    money: MoneyPartner, hooked: CallbackReceiver
) -> None:
    await money.customer(PAYER, balance=START)
    await arm(money, path="*", kind="callback_drop", probability=0.5)
    for n in range(10):
        await money.bank_transfer(request_id(n), PAYER, "1000")
    for n in range(10):
        await money.wait_for_status(request_id(n), "SUCCESS")
    await asyncio.sleep(0.1)
    dropped = {e["requestId"] for e in await callback_log(money) if e["fault"] == "callback_drop"}
    delivered = {r.body["requestId"] for r in hooked.received}
    assert dropped
    assert delivered
    assert dropped | delivered == {request_id(n) for n in range(10)}
    assert not dropped & delivered
    stats = await money.control("GET", "/faults/stats")
    assert (stats["callbacks"], stats["byKind"]["callback_drop"]) == (10, len(dropped))


async def test_refusals_draw_no_callback_fault(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=0)
    await arm(money, **transfer_rule("callback_drop"))
    assert (await money.bank_transfer(request_id(1), PAYER, "1000")).json()["code"] == 140001
    [rule] = await money.control("GET", "/faults")
    assert (rule["matched"], rule["remaining"]) == (0, 1)

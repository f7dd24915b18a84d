"""Fault rules over real HTTP: what the client sees for each kind, whether the money moved,
probabilities and counts, reproducibility under a seed, counters, and start-up rules.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from kaspro_sandbox import SandboxConfig, create_app, start_sandbox
from kaspro_sandbox.faults import COUNTED_KINDS, FaultSpecError

from .partner_client import (
    BANK_TRANSFER_PATH,
    P2P_PATH,
    STATUS_PATH,
    FakeClock,
    MoneyPartner,
    fast_money_config,
    request_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAYER = "081234567890"
DRIVER = "085712345678"
INQUIRY = "/customer-account-inquiry/"
START = 150_000


@pytest.fixture(scope="module")
def sandbox_config(clock: FakeClock) -> SandboxConfig:
    return fast_money_config(clock)


# helpers


async def arm(money: MoneyPartner, **rule: Any) -> dict[str, Any]:
    result: dict[str, Any] = await money.control("POST", "/faults", rule)
    return result


async def funded(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=START)
    await money.customer(DRIVER)


def p2p_body(rid: str, amount: str = "1000") -> dict[str, Any]:
    return {
        "requestId": rid,
        "mobileNumber": PAYER,
        "destination": DRIVER,
        "amount": amount,
        "pocketId": "2",
        "note": "tip",
    }


async def send_p2p(money: MoneyPartner, rid: str, timeout: float | None = None) -> httpx.Response:
    return await money.post(P2P_PATH, p2p_body(rid), timeout=timeout)


async def moved(money: MoneyPartner) -> bool:
    """Whether any money moved since `funded` (journal and balances agree)."""
    ledger = await money.ledger()
    balances = (await money.balances())["subscribers"]
    assert (balances[PAYER] == START) == (ledger == []), (balances, ledger)
    return bool(ledger)


async def status_code_of(money: MoneyPartner, rid: str) -> int:
    code: int = (await money.status(rid)).json()["code"]
    return code


async def log(money: MoneyPartner, path: str | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await money.control("GET", "/requests")
    return [entry for entry in entries if path is None or entry["path"] == path]


async def stats(money: MoneyPartner) -> dict[str, Any]:
    result: dict[str, Any] = await money.control("GET", "/faults/stats")
    return result


# answers instead of the real one, nothing carried out


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "text"),
    [
        ("http_500", 500, "text/plain", "Internal Server Error"),
        ("http_502", 502, "text/html", "502 Bad Gateway"),
        ("http_503", 503, "text/plain", "Service Unavailable"),
        ("unknown_code", 200, "application/json", '"code":987654'),
        ("garbage", 200, "application/json", '{"responseId"'),
    ],
)
async def test_answering_faults_move_no_money(
    money: MoneyPartner, kind: str, status: int, content_type: str, text: str
) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind=kind)

    response = await send_p2p(money, request_id(1))

    assert response.status_code == status
    assert response.headers["content-type"].startswith(content_type)
    assert text in response.text
    if kind != "unknown_code":
        with pytest.raises(ValueError, match="Expecting value"):  # never readable JSON
            response.json()
    assert not await moved(money)
    assert await status_code_of(money, request_id(1)) == 150001
    # Not remembered: the same requestId is carried out when sent again.
    assert (await send_p2p(money, request_id(1))).json()["code"] == 0
    assert await moved(money)
    [entry, _] = await log(money, P2P_PATH)
    assert entry["fault"] == kind
    assert entry["httpStatus"] == status
    assert entry["faultRule"] is not None


@pytest.mark.parametrize("kind", ["http_500", "http_502", "http_503", "garbage", "unknown_code"])
async def test_answering_faults_after_execution_move_the_money(
    money: MoneyPartner, kind: str
) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind=kind, afterExecution=True)

    response = await send_p2p(money, request_id(1))

    assert response.headers.get("content-type", "").startswith(
        "application/json" if kind in ("garbage", "unknown_code") else "text/"
    )
    assert await moved(money)
    assert (await money.status(request_id(1))).json()["data"]["status"] == "SUCCESS"
    again = await send_p2p(money, request_id(1))
    assert again.json()["code"] == 0
    assert len(await money.ledger()) == 1


async def test_reset_drops_the_connection_without_an_answer(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="reset")

    with pytest.raises(httpx.TransportError) as raised:
        await send_p2p(money, request_id(1))

    assert isinstance(raised.value, httpx.ReadError | httpx.RemoteProtocolError)
    assert not await moved(money)
    assert await status_code_of(money, request_id(1)) == 150001
    [entry] = await log(money, P2P_PATH)
    assert (entry["fault"], entry["httpStatus"], entry["code"]) == ("reset", None, None)
    # The client recovers on a new connection.
    assert (await send_p2p(money, request_id(1))).json()["code"] == 0


async def test_reset_after_execution_moves_the_money(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="reset", afterExecution=True)
    with pytest.raises(httpx.TransportError):
        await send_p2p(money, request_id(1))
    assert await moved(money)
    assert await status_code_of(money, request_id(1)) == 0


async def test_reset_on_the_token_path(money: MoneyPartner) -> None:
    await arm(money, path="/authentication-server/oauth/token", kind="reset")
    with pytest.raises(httpx.TransportError):
        await money.fetch_token()
    assert (await money.fetch_token()).status_code == 200


# timeouts


async def test_timeout_before_moves_no_money(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="timeout_before", delaySeconds=0.3)

    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        await send_p2p(money, request_id(1), timeout=0.05)
    assert time.perf_counter() - started < 0.25

    assert not await moved(money)
    assert await status_code_of(money, request_id(1)) == 150001
    [entry] = await log(money, P2P_PATH)
    assert (entry["fault"], entry["httpStatus"]) == ("timeout_before", 504)


async def test_timeout_before_answers_504_to_a_patient_client(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="timeout_before", delaySeconds=0.1)
    started = time.perf_counter()
    response = await send_p2p(money, request_id(1))
    assert time.perf_counter() - started >= 0.1
    assert response.status_code == 504
    assert "504 Gateway Time-out" in response.text
    assert not await moved(money)


async def test_timeout_after_moves_the_money_but_loses_the_answer(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="timeout_after", delaySeconds=0.3)

    with pytest.raises(httpx.ReadTimeout):
        await send_p2p(money, request_id(1), timeout=0.05)

    assert await moved(money)
    assert (await money.balances())["subscribers"] == {PAYER: START - 1000, DRIVER: 1000}
    status = (await money.status(request_id(1))).json()
    assert status["data"]["status"] == "SUCCESS"
    # A retry with the same requestId gets the first answer and moves nothing again.
    assert (await send_p2p(money, request_id(1))).json()["code"] == 0
    assert len(await money.ledger()) == 1
    [entry, _] = await log(money, P2P_PATH)
    assert (entry["fault"], entry["httpStatus"], entry["code"]) == ("timeout_after", 504, None)


async def test_timeout_after_answers_504_to_a_patient_client(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="timeout_after", delaySeconds=0.05)
    response = await send_p2p(money, request_id(1))
    assert response.status_code == 504
    assert await moved(money)


async def test_a_held_request_ends_when_its_client_leaves() -> None:
    """The sandbox stops waiting for a client that has gone: stopping it is quick."""
    sandbox = await start_sandbox(SandboxConfig())
    async with MoneyPartner.connect(sandbox.base_url) as partner:
        await partner.control("POST", "/faults", {"path": INQUIRY, "kind": "timeout_before"})
        with pytest.raises(httpx.ReadTimeout):
            await partner.get(INQUIRY, PAYER, timeout=0.05)
    started = time.perf_counter()
    await sandbox.stop()
    assert time.perf_counter() - started < 0.8  # the graceful period is 1 s


# latency and in-process


async def test_latency_is_fixed_plus_jitter_then_the_normal_answer(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="latency", delaySeconds=0.1, jitterSeconds=0.05)
    started = time.perf_counter()
    response = await send_p2p(money, request_id(1))
    elapsed = time.perf_counter() - started
    assert 0.1 <= elapsed < 1.0
    assert response.json()["code"] == 0
    assert await moved(money)
    [entry] = await log(money, P2P_PATH)
    assert (entry["fault"], entry["code"], entry["httpStatus"]) == ("latency", 0, 200)


async def test_a_client_that_gives_up_during_latency_still_moved_money(
    money: MoneyPartner,
) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="latency", delaySeconds=0.3)
    with pytest.raises(httpx.ReadTimeout):
        await send_p2p(money, request_id(1), timeout=0.05)
    assert await moved(money)


async def test_in_process_forever_keeps_an_async_transfer_pending(money: MoneyPartner) -> None:
    await money.customer(PAYER, balance=START)
    await arm(money, path=BANK_TRANSFER_PATH, kind="in_process_forever")

    reply = (await money.bank_transfer(request_id(1), PAYER, "50000")).json()
    assert (reply["code"], reply["message"]) == (1, "In Process")

    await asyncio.sleep(0.2)  # the completion timer (0.05 s) would have fired by now
    transaction = await money.transaction(request_id(1))
    assert (transaction["status"], transaction["held"]) == ("PENDING", True)
    assert transaction["plannedStatus"] is None
    assert (await money.balances())["subscribers"][PAYER] == START - 50000
    status = (await money.status(request_id(1))).json()["data"]
    assert status["status"] == "PENDING"

    await money.control("POST", f"/transactions/{request_id(1)}/complete")
    assert (await money.status(request_id(1))).json()["data"]["status"] == "SUCCESS"


async def test_in_process_forever_on_a_sync_transfer(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=P2P_PATH, kind="in_process_forever")

    reply = (await send_p2p(money, request_id(1))).json()

    assert (reply["code"], reply["message"]) == (1, "In Process")
    assert reply["data"]["walletTransactions"][1]["amount"] == 1000
    assert await moved(money)
    assert (await money.status(request_id(1))).json()["data"]["status"] == "SUCCESS"
    # The remembered answer is the real one.
    assert (await send_p2p(money, request_id(1))).json()["code"] == 0


async def test_in_process_forever_under_a_star_leaves_other_paths_alone(
    money: MoneyPartner,
) -> None:
    await funded(money)
    rule = await arm(money, path="*", kind="in_process_forever")
    await send_p2p(money, request_id(1))
    assert (await money.status(request_id(1))).json()["data"]["status"] == "SUCCESS"
    assert (await money.get(INQUIRY, PAYER)).json()["code"] == 0
    [listed] = await money.control("GET", "/faults")
    assert listed["id"] == rule["id"]
    assert (listed["matched"], listed["fired"]) == (1, 1)


async def test_faults_apply_to_the_status_inquiry(money: MoneyPartner) -> None:
    await funded(money)
    await send_p2p(money, request_id(1))
    await arm(money, path=STATUS_PATH, kind="http_503", times=2)
    assert (await money.status(request_id(1))).status_code == 503
    assert (await money.status(request_id(1))).status_code == 503
    assert (await money.status(request_id(1))).json()["code"] == 0


# rules: times, probability, listing, replacing, removing


async def test_times_counts_fires(money: MoneyPartner) -> None:
    await arm(money, path=INQUIRY, kind="http_500", times=2)
    statuses = [(await money.get(INQUIRY, PAYER)).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    [rule] = await money.control("GET", "/faults")
    assert (rule["times"], rule["remaining"], rule["fired"]) == (2, 0, 2)


async def test_a_rule_with_a_probability_has_no_limit_by_default(money: MoneyPartner) -> None:
    rule = await arm(money, path=INQUIRY, kind="http_500", probability=1)
    assert rule["times"] is None
    statuses = {(await money.get(INQUIRY, PAYER)).status_code for _ in range(5)}
    assert statuses == {500}


async def test_probability_zero_never_fires_but_counts_matches(money: MoneyPartner) -> None:
    await arm(money, path="*", kind="http_500", probability=0)
    for _ in range(4):
        assert (await money.get(INQUIRY, PAYER)).status_code == 200
    [rule] = await money.control("GET", "/faults")
    assert (rule["matched"], rule["fired"]) == (5, 0)  # the token request matched too


async def test_probability_fires_about_that_often(money: MoneyPartner) -> None:
    await arm(money, path=INQUIRY, kind="http_503", probability=0.3)
    statuses = [(await money.get(INQUIRY, PAYER)).status_code for _ in range(100)]
    assert 15 <= statuses.count(503) <= 45
    [rule] = await money.control("GET", "/faults")
    assert rule["fired"] == statuses.count(503)
    assert rule["matched"] == 100


async def test_rules_are_tried_in_the_order_armed(money: MoneyPartner) -> None:
    await money.token()  # "*" covers the token path too
    await arm(money, path=INQUIRY, kind="http_502", times=1)
    await arm(money, path="*", kind="http_503", times=2)
    statuses = [(await money.get(INQUIRY, PAYER)).status_code for _ in range(4)]
    assert statuses == [502, 503, 503, 200]


async def test_the_same_path_and_kind_replaces_a_rule(money: MoneyPartner) -> None:
    first = await arm(money, path=INQUIRY, kind="http_500", times=5)
    await arm(money, path=INQUIRY, kind="garbage")
    second = await arm(money, path=INQUIRY, kind="http_500", times=1)
    listed = await money.control("GET", "/faults")
    assert [(rule["kind"], rule["times"]) for rule in listed] == [("http_500", 1), ("garbage", 1)]
    assert second["id"] != first["id"]


async def test_one_rule_can_be_removed(money: MoneyPartner) -> None:
    rule = await arm(money, path=INQUIRY, kind="http_500")
    removed = await money.http.delete(f"/_sandbox/faults/{rule['id']}")
    assert removed.json()["id"] == rule["id"]
    assert (await money.http.delete(f"/_sandbox/faults/{rule['id']}")).status_code == 404
    assert (await money.get(INQUIRY, PAYER)).status_code == 200


@pytest.mark.parametrize(
    "rule",
    [
        {"path": "*", "kind": "explode"},
        {"path": "/nowhere/", "kind": "http_500"},
        {"path": INQUIRY, "kind": "in_process_forever"},
        {"path": STATUS_PATH, "kind": "in_process_forever"},
        {"path": P2P_PATH, "kind": "callback_drop"},
        {"path": "/_sandbox/topup", "kind": "callback_reorder"},
        {"path": "/_sandbox/topup", "kind": "http_500"},
        {"path": "*", "kind": "http_500", "probability": 1.5},
        {"path": "*", "kind": "http_500", "probability": -0.1},
        {"path": "*", "kind": "http_500", "probability": "0.5"},
        {"path": "*", "kind": "http_500", "times": 0},
        {"path": "*", "kind": "http_500", "times": 1.5},
        {"path": "*", "kind": "latency", "delaySeconds": -1},
        {"path": "*", "kind": "latency", "jitterSeconds": True},
        {"path": "*", "kind": "latency", "afterExecution": True},
        {"path": "*", "kind": "http_500", "afterExecution": "yes"},
        {"path": "*", "kind": "http_500", "copies": 3},
        {"path": "*", "kind": "callback_duplicate", "copies": 1},
        {"path": "*", "kind": "http_500", "bogus": 1},
        {"path": "*", "kind": "delay"},
    ],
)
async def test_invalid_rules_are_400(money: MoneyPartner, rule: dict[str, Any]) -> None:
    response = await money.http.post("/_sandbox/faults", json=rule)
    assert response.status_code == 400
    assert response.json()["error"]
    assert await money.control("GET", "/faults") == []


async def test_a_listed_rule_can_be_armed_again(money: MoneyPartner) -> None:
    listed = await arm(money, path="*", kind="latency", probability=0.5, jitterSeconds=0.01)
    await money.http.delete("/_sandbox/faults")
    again = await arm(money, **listed)
    assert {k: v for k, v in again.items() if k != "id"} == {
        k: v for k, v in listed.items() if k != "id"
    }


# reproducibility


MIXED_RULES: list[dict[str, Any]] = [
    {"path": INQUIRY, "kind": "http_503", "probability": 0.2},
    {"path": P2P_PATH, "kind": "http_503", "probability": 0.2},
    {"path": P2P_PATH, "kind": "timeout_after", "probability": 0.2, "delaySeconds": 0},
    {
        "path": INQUIRY,
        "kind": "latency",
        "probability": 0.3,
        "delaySeconds": 0,
        "jitterSeconds": 0.01,
    },
]


async def run_mixed_traffic(partner: MoneyPartner) -> list[tuple[str, str | None, int | None]]:
    """The same 40 requests, then the faults they met, from the request log."""
    await partner.customer(PAYER, balance=START)
    await partner.customer(DRIVER)
    await partner.http.delete("/_sandbox/requests")
    for n in range(20):
        await partner.post(P2P_PATH, p2p_body(request_id(n)))
        await partner.get(INQUIRY, PAYER)
    entries = await partner.control("GET", "/requests")
    return [(entry["path"], entry["fault"], entry["httpStatus"]) for entry in entries]


async def test_the_same_seed_gives_the_same_faults(money: MoneyPartner) -> None:
    runs = []
    for _ in range(2):
        await money.reset()
        for rule in MIXED_RULES:
            await arm(money, **rule)
        runs.append(await run_mixed_traffic(money))
    assert runs[0] == runs[1]
    faults = [fault for _, fault, _ in runs[0]]
    assert {"http_503", "timeout_after", "latency", None} <= set(faults)


async def test_start_up_rules_and_fault_seed(clock: FakeClock) -> None:
    async def faults_met(fault_seed: int) -> list[tuple[str, str | None, int | None]]:
        config = fast_money_config(clock, faults=tuple(MIXED_RULES), fault_seed=fault_seed)
        async with (
            await start_sandbox(config) as sandbox,
            MoneyPartner.connect(sandbox.base_url) as partner,
        ):
            assert len(await partner.control("GET", "/faults")) == len(MIXED_RULES)
            first = await run_mixed_traffic(partner)
            # A reset arms the start-up rules again, generator reseeded.
            await partner.reset()
            assert {r["fired"] for r in await partner.control("GET", "/faults")} == {0}
            assert first == await run_mixed_traffic(partner)
            return first

    assert await faults_met(11) == await faults_met(11)
    assert await faults_met(11) != await faults_met(12)


async def test_the_fault_seed_defaults_to_the_seed() -> None:
    rules = ({"path": "*", "kind": "http_500", "probability": 0.5},)
    assert create_app(SandboxConfig(seed=3, faults=rules)).state.sandbox.faults.seed == 3
    config = SandboxConfig(seed=3, fault_seed=4, faults=rules)
    assert create_app(config).state.sandbox.faults.seed == 4


async def test_a_bad_start_up_rule_is_refused() -> None:
    with pytest.raises(FaultSpecError, match="fault rule 2: kind must be one of"):
        create_app(SandboxConfig(faults=({"path": "*", "kind": "reset"}, {"path": "*"})))


# counters


async def test_stats_count_every_injection(money: MoneyPartner) -> None:
    await funded(money)
    await arm(money, path=INQUIRY, kind="http_500", times=2)
    await arm(money, path=P2P_PATH, kind="unknown_code", times=1)
    for _ in range(3):
        await money.get(INQUIRY, PAYER)
    await send_p2p(money, request_id(1))
    await send_p2p(money, request_id(1))

    counted = await stats(money)

    assert counted["seed"] == 7
    # Every request that passed authentication was asked about (token and onboarding too).
    assert counted["requests"] == len(await log(money)) == 8
    assert counted["total"] == 3
    assert set(counted["byKind"]) == set(COUNTED_KINDS)
    assert counted["byKind"]["http_500"] == 2
    assert counted["byKind"]["unknown_code"] == 1
    assert counted["byPath"] == {INQUIRY: {"http_500": 2}, P2P_PATH: {"unknown_code": 1}}
    # Clearing the rules keeps the counters; clearing the counters keeps the rules.
    await money.http.delete("/_sandbox/faults")
    assert (await stats(money))["total"] == 3
    cleared = (await money.http.delete("/_sandbox/faults/stats")).json()
    assert (cleared["total"], cleared["requests"]) == (0, 0)

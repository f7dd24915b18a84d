"""KasProClient against a fake gateway over real HTTP: tokens, signatures, retries,
deadlines, connections, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from aiohttp import web

from wallet_service.config import Config
from wallet_service.domain.account import AccountType, KycStatus
from wallet_service.domain.phone import MobileNumber
from wallet_service.kaspro import (
    KasProAuthError,
    KasProClient,
    KasProRejected,
    KasProSettings,
    KasProUnavailable,
    MoneyReply,
    Outcome,
    Registration,
    Rejection,
    TransferState,
)
from wallet_service.kaspro.signing import signature
from wallet_service.metrics import Metrics

MOBILE = MobileNumber("81234567890")
HMAC_KEY = "partner-key"
HMAC_SECRET = "hmac-s3cr3t"
CLIENT_SECRET = "client-s3cr3t"

# An answer: an HTTP response, or raw bytes written before the connection is closed (no
# usable answer), or a function of the request that returns either.
Answer = httpx.Response | bytes
Reply = Answer | Callable[[httpx.Request], Awaitable[Answer]]

ACCOUNT = {
    "code": 0,
    "message": "Berhasil",
    "data": {
        "firstName": "Budi",
        "middleName": "",
        "lastName": "Santoso",
        "fullName": "Budi Santoso",
        "accountType": "Basic",
        "accountStatus": "Active",
        "customerType": "Subscriber",
        "email": "",
        "mobileNumber": 6281234567890,
        "kycStatus": "Unverified",
        "balance": {"pocketId": "2", "availableBalance": "150000"},
    },
}

_SIGNATURE_HEADER = re.compile(
    r'Signature keyId="(?P<key>[^"]*)",algorithm="hmac-sha256",'
    r'headers="\(request-target\) date",signature="(?P<sig>[^"]*)"'
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_633_330_830.0  # Mon, 04 Oct 2021 07:00:30 GMT

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeGateway:
    """Plays KasPro's partner gateway: issues tokens and checks every signed call. Requests
    and answers are httpx objects, built from and into real HTTP by ``serve``."""

    url: str = ""
    expires_in: int | None = 3600
    token_delay: float = 0.0
    call_delay: float = 0.0
    token_reply: httpx.Response | None = None
    routes: dict[str, list[Reply]] = field(default_factory=dict)
    tokens_issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    calls: list[httpx.Request] = field(default_factory=list)
    connections: set[Any] = field(default_factory=set)  # the client's addresses seen

    def reply(self, path: str, *replies: Reply) -> None:
        """Queue answers for ``path``; the last one repeats."""
        self.routes[path] = list(replies)

    async def serve(self, request: web.BaseRequest) -> web.StreamResponse:
        assert request.transport is not None
        self.connections.add(request.transport.get_extra_info("peername"))
        content = await request.read()
        answer = await self(
            httpx.Request(
                request.method, str(request.url), headers=request.headers, content=content
            )
        )
        if isinstance(answer, bytes):
            request.transport.write(answer)
            request.transport.close()
            raise asyncio.CancelledError  # aiohttp's server ends the handler quietly
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return web.Response(status=answer.status_code, body=answer.content, headers=headers)

    async def __call__(self, request: httpx.Request) -> Answer:
        if request.url.path.endswith("/authentication-server/oauth/token"):
            return await self._token(request)
        self.calls.append(request)
        if self.call_delay:
            await asyncio.sleep(self.call_delay)
        problem = self._check(request)
        if problem is not None:
            return httpx.Response(401, json=problem)
        replies = self.routes[request.url.path]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, httpx.Response | bytes):
            return reply
        return await reply(request)

    async def _token(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        assert form == {
            "grant_type": ["client_credentials"],
            "client_id": ["client"],
            "client_secret": [CLIENT_SECRET],
        }
        assert "Authorization" not in request.headers
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.token_reply is not None:
            return self.token_reply
        token = f"token-{len(self.tokens_issued) + 1}"
        self.tokens_issued.append(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "bearer", "scope": "partner"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)

    def _check(self, request: httpx.Request) -> dict[str, Any] | None:
        headers = request.headers
        match = _SIGNATURE_HEADER.fullmatch(headers.get("KasPro-Signature", ""))
        if match is None or match["key"] != HMAC_KEY or headers.get("Partner-Key") != HMAC_KEY:
            return {"code": 401001, "message": "Invalid signature"}
        expected = signature(HMAC_SECRET, request.method, request.url.path, headers["Date"])
        if match["sig"] != expected:
            return {"code": 401001, "message": "Invalid signature"}
        bearer = headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.tokens_issued or bearer in self.revoked:
            return {"code": 401002, "message": "Invalid or expired token"}
        return None


def settings(base_url: str = "http://kaspro.test", **overrides: Any) -> KasProSettings:
    ours = {
        "client_id": "client",
        "client_secret": CLIENT_SECRET,
        "hmac_key": HMAC_KEY,
        "hmac_secret": HMAC_SECRET,
    }
    return dataclasses.replace(Config().kaspro_settings(base_url), **(ours | overrides))


def client_for(
    gateway: FakeGateway,
    clock: Callable[[], float] = time.time,
    *,
    path: str = "",
    **overrides: Any,
) -> KasProClient:
    return KasProClient(settings(gateway.url + path, **overrides), clock=clock)


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    fake = FakeGateway()
    fake.reply("/customer-account-inquiry/", httpx.Response(200, json=ACCOUNT))
    # A handler still waiting is cancelled when the client hangs up, or at the end.
    runner = web.ServerRunner(
        web.Server(fake.serve, handler_cancellation=True), shutdown_timeout=0.1
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    await runner.cleanup()


# Headers and signature.


async def test_every_call_is_signed_and_carries_the_token(gateway: FakeGateway) -> None:
    clock = FakeClock()
    async with client_for(gateway, clock) as client:
        account = await client.account_inquiry(MOBILE)
    assert account.mobile_number == MOBILE
    assert account.account_type is AccountType.BASIC
    assert account.kyc_status is KycStatus.UNVERIFIED
    assert account.balance.available_idr == 150000

    [call] = gateway.calls
    assert call.method == "GET"
    assert str(call.url) == f"{gateway.url}/customer-account-inquiry/?mobileNumber=081234567890"
    headers = call.headers
    assert headers["Authorization"] == "Bearer token-1"
    assert headers["Date"] == "Mon, 04 Oct 2021 07:00:30 GMT"
    assert headers["Partner-Key"] == HMAC_KEY
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["KasPro-Signature"] == (
        'Signature keyId="partner-key",algorithm="hmac-sha256",'
        'headers="(request-target) date",signature="'
        + signature(HMAC_SECRET, "GET", "/customer-account-inquiry/", headers["Date"])
        + '"'
    )


async def test_each_call_gets_a_fresh_date_and_signature(gateway: FakeGateway) -> None:
    clock = FakeClock()
    async with client_for(gateway, clock) as client:
        await client.account_inquiry(MOBILE)
        clock.now += 7
        await client.account_inquiry(MOBILE)
    first, second = gateway.calls
    assert second.headers["Date"] == "Mon, 04 Oct 2021 07:00:37 GMT"
    assert first.headers["KasPro-Signature"] != second.headers["KasPro-Signature"]


async def test_base_url_path_prefix_is_part_of_the_signed_path(gateway: FakeGateway) -> None:
    gateway.reply("/gw/validate-otp/", httpx.Response(200, json={"code": 0}))
    async with client_for(gateway, path="/gw") as client:
        await client.validate_otp(MOBILE, "123456")
    [call] = gateway.calls
    assert call.url.path == "/gw/validate-otp/"
    assert json.loads(call.content) == {"mobileNumber": "081234567890", "otp": "123456"}


# Token cache and refresh.


async def test_token_is_cached_between_calls(gateway: FakeGateway) -> None:
    async with client_for(gateway) as client:
        for _ in range(3):
            await client.account_inquiry(MOBILE)
    assert gateway.tokens_issued == ["token-1"]
    assert {call.headers["Authorization"] for call in gateway.calls} == {"Bearer token-1"}


@pytest.mark.parametrize("expires_in", [3600, None])
async def test_token_is_refreshed_within_the_margin_of_expiry(
    gateway: FakeGateway, expires_in: int | None
) -> None:
    gateway.expires_in = expires_in  # None: the client assumes an hour
    clock = FakeClock()
    async with client_for(gateway, clock) as client:  # refreshed 60 s before expiry
        await client.account_inquiry(MOBILE)
        clock.now += 3539
        await client.account_inquiry(MOBILE)
        assert gateway.tokens_issued == ["token-1"]
        clock.now += 2
        await client.account_inquiry(MOBILE)
    assert gateway.tokens_issued == ["token-1", "token-2"]
    assert gateway.calls[-1].headers["Authorization"] == "Bearer token-2"


async def test_concurrent_callers_share_one_token_fetch(gateway: FakeGateway) -> None:
    gateway.token_delay = 0.05
    async with client_for(gateway) as client:
        accounts = await asyncio.gather(*(client.account_inquiry(MOBILE) for _ in range(10)))
    assert len(accounts) == 10
    assert gateway.tokens_issued == ["token-1"]


async def test_refused_token_is_refreshed_once_and_the_call_retried(gateway: FakeGateway) -> None:
    async with client_for(gateway) as client:
        await client.account_inquiry(MOBILE)
        gateway.revoked.add("token-1")
        account = await client.account_inquiry(MOBILE)
    assert account.mobile_number == MOBILE
    assert gateway.tokens_issued == ["token-1", "token-2"]
    assert [c.headers["Authorization"] for c in gateway.calls] == [
        "Bearer token-1",
        "Bearer token-1",
        "Bearer token-2",
    ]


async def test_a_refused_token_is_counted_with_its_refresh_and_the_call_sent_again(
    gateway: FakeGateway,
) -> None:
    metrics = Metrics()
    async with KasProClient(settings(gateway.url), metrics=metrics) as client:
        await client.account_inquiry(MOBILE)
        gateway.revoked.add("token-1")
        await client.account_inquiry(MOBILE)

    def count(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert count("wallet_kaspro_token_refreshes_total", reason="due") == 1
    assert count("wallet_kaspro_token_refreshes_total", reason="refused") == 1
    assert count("wallet_kaspro_resends_total", reason="token_refused") == 1
    inquiry = {"endpoint": "account_inquiry"}
    assert count("wallet_kaspro_calls_total", **inquiry, outcome="code_succeeded") == 2
    assert count("wallet_kaspro_calls_total", **inquiry, outcome="code_gateway_refused") == 1
    assert count("wallet_kaspro_calls_total", endpoint="token", outcome="http_2xx") == 2
    assert count("wallet_kaspro_call_seconds_count", **inquiry) == 3


async def test_concurrent_refusals_share_one_refresh(gateway: FakeGateway) -> None:
    async with client_for(gateway) as client:
        await client.account_inquiry(MOBILE)
        gateway.revoked.add("token-1")
        # Delays make the five calls overlap: all are refused before any refresh ends.
        gateway.call_delay = gateway.token_delay = 0.02
        await asyncio.gather(*(client.account_inquiry(MOBILE) for _ in range(5)))
    assert gateway.tokens_issued == ["token-1", "token-2"]
    assert len(gateway.calls) == 1 + 5 + 5


async def test_unreadable_401_is_refreshed_and_retried_once(gateway: FakeGateway) -> None:
    gateway.reply(
        "/customer-account-inquiry/",
        httpx.Response(401, text="<html>Unauthorized</html>"),
        httpx.Response(200, json=ACCOUNT),
    )
    async with client_for(gateway) as client:
        account = await client.account_inquiry(MOBILE)
    assert account.balance.available_idr == 150000
    assert gateway.tokens_issued == ["token-1", "token-2"]
    assert len(gateway.calls) == 2


async def test_a_second_token_refusal_is_an_auth_error(gateway: FakeGateway) -> None:
    gateway.reply(
        "/customer-account-inquiry/",
        httpx.Response(401, json={"code": 401002, "message": "Invalid or expired token"}),
    )
    async with client_for(gateway) as client:
        with pytest.raises(KasProAuthError) as caught:
            await client.account_inquiry(MOBILE)
    assert caught.value.code == 401002
    assert len(gateway.calls) == 2
    assert gateway.tokens_issued == ["token-1", "token-2"]


@pytest.mark.parametrize("code", [401001, 401003])
async def test_signature_and_clock_refusals_are_not_retried(
    gateway: FakeGateway, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.reply("/customer-account-inquiry/", httpx.Response(401, json={"code": code}))
    async with client_for(gateway) as client:
        with pytest.raises(KasProAuthError) as caught:
            await client.account_inquiry(MOBILE)
    assert isinstance(caught.value, KasProUnavailable)
    assert caught.value.code == code
    assert len(gateway.calls) == 1
    assert gateway.tokens_issued == ["token-1"]
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_wrong_hmac_secret_is_an_auth_error(gateway: FakeGateway) -> None:
    async with client_for(gateway, hmac_secret="wrong") as client:
        with pytest.raises(KasProAuthError) as caught:
            await client.account_inquiry(MOBILE)
    assert caught.value.code == 401001


async def test_bad_client_credentials_are_an_auth_error(gateway: FakeGateway) -> None:
    gateway.token_reply = httpx.Response(
        401, json={"error": "invalid_client", "error_description": "Bad client credentials"}
    )
    async with client_for(gateway) as client:
        with pytest.raises(KasProAuthError, match="invalid_client"):
            await client.account_inquiry(MOBILE)
    assert gateway.calls == []


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(503, text="down"),
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json={"token_type": "bearer"}),
    ],
)
async def test_token_endpoint_failures_are_unavailable(
    gateway: FakeGateway, reply: httpx.Response
) -> None:
    gateway.token_reply = reply
    async with client_for(gateway) as client:
        with pytest.raises(KasProUnavailable) as caught:
            await client.account_inquiry(MOBILE)
    assert not isinstance(caught.value, KasProAuthError)
    assert gateway.calls == []


# Deadlines and transport failures.


async def test_a_hanging_gateway_times_out_within_the_callers_budget(
    gateway: FakeGateway,
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    gateway.reply("/customer-account-inquiry/", hang)
    # The outer bound only catches a hang (it would raise TimeoutError instead).
    async with client_for(gateway) as client, asyncio.timeout(10):
        with pytest.raises(KasProUnavailable, match="timeout"):
            await client.account_inquiry(MOBILE, timeout=0.1)


async def test_the_token_fetch_counts_against_the_budget(gateway: FakeGateway) -> None:
    gateway.token_delay = 30
    # The outer bound only catches a hang (it would raise TimeoutError instead).
    async with client_for(gateway) as client, asyncio.timeout(10):
        with pytest.raises(KasProUnavailable, match="timeout"):
            await client.account_inquiry(MOBILE, timeout=0.1)
    assert gateway.calls == []


async def test_without_a_timeout_the_settings_bound_the_call(gateway: FakeGateway) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    gateway.reply("/customer-account-inquiry/", slow)
    async with client_for(gateway, timeout_seconds=0.1) as client, asyncio.timeout(10):
        with pytest.raises(KasProUnavailable, match="timeout"):
            await client.account_inquiry(MOBILE)
        # A caller with more time left than the configured limit is still capped by it.
        with pytest.raises(KasProUnavailable, match="timeout"):
            await client.account_inquiry(MOBILE, timeout=60)


async def test_ekyc_uses_its_own_longer_default_timeout(gateway: FakeGateway) -> None:
    async def ocr(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return httpx.Response(200, json={"code": 0, "data": {"idCardNumber": "x"}})

    gateway.reply("/pil-partner/ekyc-upgrade-premium-inquiry/", ocr)
    async with client_for(gateway, timeout_seconds=0.05, ekyc_timeout_seconds=2.0) as client:
        identity = await client.upgrade_kyc("ABCDEFGHIJKLMNOP", MOBILE, b"ktp", b"me", b"both")
        assert identity.id_card_number == "x"
        with pytest.raises(KasProUnavailable, match="timeout"):
            await client.upgrade_kyc(
                "ABCDEFGHIJKLMNOP", MOBILE, b"ktp", b"me", b"both", timeout=0.05
            )


async def test_no_time_left_sends_nothing(gateway: FakeGateway) -> None:
    async with client_for(gateway) as client:
        with pytest.raises(KasProUnavailable):
            await client.account_inquiry(MOBILE, timeout=0)
    assert gateway.tokens_issued == []


# Ways an answer can fail to be one, written raw before the connection is closed.
NO_ANSWER = pytest.mark.parametrize(
    "broken",
    [
        b"",  # closed without a word
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"code"',  # cut short
    ],
    ids=["closed", "not-http", "cut-short"],
)


@NO_ANSWER
async def test_no_usable_answer_is_unavailable(gateway: FakeGateway, broken: bytes) -> None:
    gateway.reply("/customer-account-inquiry/", broken)
    async with client_for(gateway) as client:
        with pytest.raises(KasProUnavailable, match="transport error: "):
            await client.account_inquiry(MOBILE)


async def test_connection_refused_on_a_real_socket_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with KasProClient(settings(base_url=f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(KasProUnavailable, match="transport error"):
            await client.account_inquiry(MOBILE, timeout=2)


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(500, json={"code": 0, "message": "Berhasil"}),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(200, text="<html>ok</html>"),
        httpx.Response(200, content=b"\xff\xfe{"),
        httpx.Response(200, json=[ACCOUNT]),
        httpx.Response(200, json={"message": "Berhasil"}),
        httpx.Response(200, json={"code": 1, "message": "In Process"}),
        httpx.Response(200, json={"code": 777, "message": "?"}),
        httpx.Response(404, text="Not Found"),
        httpx.Response(302, headers={"Location": "https://elsewhere.test/"}),
        httpx.Response(302, headers={"Location": "https://elsewhere.test/"}, json=ACCOUNT),
    ],
)
async def test_answers_without_a_known_outcome_are_unavailable(
    gateway: FakeGateway, reply: httpx.Response
) -> None:
    gateway.reply("/customer-account-inquiry/", reply)
    async with client_for(gateway) as client:
        with pytest.raises(KasProUnavailable):
            await client.account_inquiry(MOBILE)


async def test_answer_for_another_number_is_unavailable(gateway: FakeGateway) -> None:
    other = json.loads(json.dumps(ACCOUNT))
    other["data"]["mobileNumber"] = 6281299998888
    gateway.reply("/customer-account-inquiry/", httpx.Response(200, json=other))
    async with client_for(gateway) as client:
        with pytest.raises(KasProUnavailable, match="another mobile number"):
            await client.account_inquiry(MOBILE)


# Endpoints end to end through the client.


async def test_register_customer(gateway: FakeGateway) -> None:
    gateway.reply(
        "/register-customer/",
        httpx.Response(200, json={"responseId": "REG1", "message": "Berhasil", "code": 0}),
        httpx.Response(
            200,
            json={
                "responseId ": "REG2",
                "code": 110006,
                "message": "Mobile number already registered",
            },
        ),
    )
    registration = Registration(
        "ABCDEFGHIJKLMNOP", MOBILE, "Budi", "", "Santoso", "", "", "", "", ""
    )
    async with client_for(gateway) as client:
        assert await client.register_customer(registration) == "REG1"
        with pytest.raises(KasProRejected) as caught:
            await client.register_customer(registration)
    assert caught.value.rejection is Rejection.CUSTOMER_ALREADY_REGISTERED
    body = json.loads(gateway.calls[0].content)
    assert body["mobileNumber"] == "081234567890"
    assert body["country"] == "ID"


async def test_request_and_validate_otp(gateway: FakeGateway) -> None:
    gateway.reply(
        "/pil-partner-get-otp/",
        httpx.Response(200, json={"message": "Berhasil", "code": 0, "data": {"expiry": 300}}),
    )
    gateway.reply(
        "/validate-otp/",
        httpx.Response(200, json={"code": 120001, "message": "Invalid OTP"}),
        httpx.Response(200, json={"message": "Berhasil", "code": 0}),
    )
    async with client_for(gateway) as client:
        assert await client.request_otp(MOBILE) == 300
        with pytest.raises(KasProRejected) as caught:
            await client.validate_otp(MOBILE, "000000")
        assert caught.value.rejection is Rejection.OTP_INVALID
        await client.validate_otp(MOBILE, "123456")
    assert gateway.calls[0].url.params["mobileNumber"] == "081234567890"


async def test_customer_not_found_is_a_rejection(gateway: FakeGateway) -> None:
    gateway.reply(
        "/customer-account-inquiry/",
        httpx.Response(200, json={"code": 110005, "message": "Customer not found"}),
    )
    async with client_for(gateway) as client:
        with pytest.raises(KasProRejected) as caught:
            await client.account_inquiry(MOBILE)
    assert caught.value.rejection is Rejection.CUSTOMER_NOT_FOUND


# Logging.


async def test_one_log_line_per_call_without_secrets_or_full_numbers(
    gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.reply(
        "/validate-otp/", httpx.Response(200, json={"code": 120001, "message": "Invalid OTP"})
    )
    caplog.set_level(logging.DEBUG, logger="wallet_service.kaspro")
    async with client_for(gateway) as client:
        with pytest.raises(KasProRejected):
            await client.validate_otp(MOBILE, "987654")
    lines = [r.getMessage() for r in caplog.records if r.name == "wallet_service.kaspro"]
    assert len(lines) == 2  # the token fetch and the call
    token_line, call_line = lines
    assert "/authentication-server/oauth/token" in token_line
    assert "status=200" in token_line
    assert "POST /validate-otp/" in call_line
    assert "status=200" in call_line
    assert "code=120001" in call_line
    assert "duration_ms=" in call_line
    assert "mobile=0812****7890" in call_line
    signed = gateway.calls[0]
    for secret in (
        "987654",
        "81234567890",
        "token-1",
        CLIENT_SECRET,
        HMAC_SECRET,
        signed.headers["KasPro-Signature"].rsplit('signature="', 1)[1].rstrip('"'),
    ):
        assert all(secret not in line for line in lines)


def test_settings_repr_hides_secrets() -> None:
    text = repr(settings())
    assert CLIENT_SECRET not in text
    assert HMAC_SECRET not in text


# Money calls: one request each, and never an exception for KasPro's trouble.

REQUEST_ID = "ABCDEFGHIJKLMNOP"
DRIVER = MobileNumber("85712345678")
ESCROW = "888000000000001"

MoneyCall = Callable[[KasProClient, float | None], Awaitable[MoneyReply]]

MONEY_CALLS: dict[str, tuple[str, MoneyCall]] = {
    "payment": (
        "/pil-transaction-payment-to-merchant/",
        lambda c, t: c.pay_to_merchant(REQUEST_ID, MOBILE, 50000, "TX-1", ESCROW, timeout=t),
    ),
    "p2p": (
        "/p2p-transaction/",
        lambda c, t: c.p2p_transfer(REQUEST_ID, MOBILE, ESCROW, 50000, timeout=t),
    ),
    "bank_transfer": (
        "/bank-transfer/",
        lambda c, t: c.bank_transfer(
            REQUEST_ID, MOBILE, "014", "1234567890", "SITI RAHAYU", 50000, timeout=t
        ),
    ),
    "retail": (
        "/bank-transfer/",
        lambda c, t: c.retail_withdrawal(REQUEST_ID, MOBILE, "ALFAMART", 50000, timeout=t),
    ),
    "qris": (
        "/qris-issuer/",
        lambda c, t: c.pay_qris(REQUEST_ID, MOBILE, "000201010212", 50000, timeout=t),
    ),
}

money_calls = pytest.mark.parametrize(
    ("path", "call"), list(MONEY_CALLS.values()), ids=list(MONEY_CALLS)
)

P2P_DONE = {
    "responseId": "RSP2",
    "code": 0,
    "message": "Berhasil",
    "data": {
        "pocketId": 2,
        "walletTransactions": [
            {"account": "081234567890", "amount": -50000, "balanceAfter": 100000},
            {"account": ESCROW, "amount": 50000, "balanceAfter": 50000},
        ],
    },
}
ASYNC_ACCEPTED = {
    "code": 1,
    "message": "In Process",
    "responseId": "RSP3",
    "data": {"amount": "50000", "serviceFee": "2500", "reffId": "REF3", "flowType": "Async"},
}

# Masked as the partner document's samples are, for every kind of money answer.
MASKED_DATA = {"amount": "5xxx0", "walletTransactions": [{"account": ESCROW, "amount": "5xxx0"}]}


async def hang(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(30)
    raise AssertionError("unreachable")


async def test_payment_to_merchant_end_to_end(gateway: FakeGateway) -> None:
    gateway.reply(
        "/pil-transaction-payment-to-merchant/",
        httpx.Response(
            200,
            json={"responseId": "RSP1", "code": 0, "data": {"reffId": "REF1", "amount": "50000"}},
        ),
    )
    async with client_for(gateway) as client:
        reply = await client.pay_to_merchant(REQUEST_ID, MOBILE, 50000, "TX-1", ESCROW)
    assert (reply.outcome, reply.reff_id, reply.amount_idr) == (Outcome.SUCCEEDED, "REF1", 50000)
    [call] = gateway.calls
    assert call.method == "POST"
    assert call.headers["Content-Type"] == "application/json"
    assert json.loads(call.content) == {
        "requestId": REQUEST_ID,
        "mobileNumber": "081234567890",
        "payments": {"pocketId": "2", "amount": "50000", "reference": "TX-1"},
        "destination": ESCROW,
    }


async def test_p2p_transfer_end_to_end(gateway: FakeGateway) -> None:
    gateway.reply("/p2p-transaction/", httpx.Response(200, json=P2P_DONE))
    async with client_for(gateway) as client:
        reply = await client.p2p_transfer(REQUEST_ID, MOBILE, ESCROW, 50000, "ride R1")
    assert (reply.outcome, reply.amount_idr, reply.reff_id) == (Outcome.SUCCEEDED, 50000, "RSP2")
    [call] = gateway.calls
    assert json.loads(call.content) == {
        "requestId": REQUEST_ID,
        "mobileNumber": "081234567890",
        "destination": ESCROW,
        "amount": "50000",
        "pocketId": "2",
        "note": "ride R1",
    }


async def test_p2p_out_of_escrow_reads_the_subscribers_line(gateway: FakeGateway) -> None:
    out = json.loads(json.dumps(P2P_DONE))
    lines = out["data"]["walletTransactions"]
    lines[0]["account"], lines[1]["account"] = ESCROW, "085712345678"
    lines[0]["amount"], lines[1]["amount"] = -42000, 42000
    gateway.reply("/p2p-transaction/", httpx.Response(200, json=out))
    async with client_for(gateway) as client:
        reply = await client.p2p_transfer(REQUEST_ID, ESCROW, DRIVER, 42000)
    assert (reply.outcome, reply.amount_idr) == (Outcome.SUCCEEDED, 42000)
    assert json.loads(gateway.calls[0].content)["note"] == ""


async def test_bank_transfer_and_qris_are_accepted_in_process(gateway: FakeGateway) -> None:
    gateway.reply("/bank-transfer/", httpx.Response(200, json=ASYNC_ACCEPTED))
    qris = json.loads(json.dumps(ASYNC_ACCEPTED))
    qris["data"]["merchantName"] = "Warung Bu Siti"
    gateway.reply("/qris-issuer/", httpx.Response(200, json=qris))
    async with client_for(gateway) as client:
        bank = await client.bank_transfer(REQUEST_ID, MOBILE, "014", "1234567890", "SITI", 50000)
        paid = await client.pay_qris(REQUEST_ID, MOBILE, "000201010212", 50000)
    assert (bank.outcome, bank.reff_id, bank.amount_idr, bank.fee_idr) == (
        Outcome.IN_PROCESS,
        "REF3",
        50000,
        2500,
    )
    assert (paid.outcome, paid.merchant_name) == (Outcome.IN_PROCESS, "Warung Bu Siti")
    assert json.loads(gateway.calls[1].content) == {
        "requestId": REQUEST_ID,
        "mobileNumber": "081234567890",
        "qrisPayload": "000201010212",
        "amount": "50000",
    }


async def test_retail_withdrawal_returns_the_withdrawal_code(gateway: FakeGateway) -> None:
    retail = json.loads(json.dumps(ASYNC_ACCEPTED))
    retail["data"]["withdrawalCode"] = "739104"
    gateway.reply("/bank-transfer/", httpx.Response(200, json=retail))
    async with client_for(gateway) as client:
        reply = await client.retail_withdrawal(REQUEST_ID, MOBILE, "INDOMARET", 50000)
    assert (reply.outcome, reply.withdrawal_code) == (Outcome.IN_PROCESS, "739104")
    assert json.loads(gateway.calls[0].content) == {
        "requestId": REQUEST_ID,
        "mobileNumber": "081234567890",
        "channel": "INDOMARET",
        "amount": "50000",
    }


@money_calls
async def test_a_money_refusal_is_a_rejected_reply(
    gateway: FakeGateway, path: str, call: MoneyCall
) -> None:
    gateway.reply(
        path,
        httpx.Response(
            200, json={"responseId": "R", "code": 140001, "message": "Insufficient balance"}
        ),
    )
    async with client_for(gateway) as client:
        reply = await call(client, None)
    assert (reply.outcome, reply.rejection) == (Outcome.REJECTED, Rejection.INSUFFICIENT_FUNDS)
    assert len(gateway.calls) == 1


async def test_invalid_request_with_http_400_is_a_rejection(gateway: FakeGateway) -> None:
    gateway.reply(
        "/p2p-transaction/",
        httpx.Response(400, json={"code": 400001, "message": "Invalid request: amount"}),
    )
    async with client_for(gateway) as client:
        reply = await client.p2p_transfer(REQUEST_ID, MOBILE, ESCROW, 50000)
    assert (reply.outcome, reply.rejection) == (Outcome.REJECTED, Rejection.INVALID_REQUEST)


@money_calls
@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (httpx.Response(500, json={"code": 0, "message": "Berhasil"}), "HTTP 500"),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), "HTTP 502"),
        (httpx.Response(503, json=ASYNC_ACCEPTED), "HTTP 503"),
        (httpx.Response(302, json={"code": 0, "data": {"amount": "50000"}}), "HTTP 302"),
        (httpx.Response(200, text="<html>ok</html>"), "HTTP 200 answer is not JSON"),
        (httpx.Response(200, content=b"\xff\xfe{"), "HTTP 200 answer is not JSON"),
        (httpx.Response(404, text="Not Found"), "HTTP 404 answer is not JSON"),
        (httpx.Response(200, json=[ASYNC_ACCEPTED]), "answer is not a JSON object"),
        (httpx.Response(200, json={"message": "Berhasil"}), "answer has no integer code"),
        (httpx.Response(200, json={"code": 777, "message": "?"}), "unknown code 777"),
        (httpx.Response(200, json={"code": 110006}), "unexpected code 110006"),
        (httpx.Response(200, json={"code": 0, "data": MASKED_DATA}), "malformed amount"),
    ],
)
async def test_answers_without_a_known_outcome_are_unknown_replies(
    gateway: FakeGateway, path: str, call: MoneyCall, reply: httpx.Response, detail: str
) -> None:
    gateway.reply(path, reply)
    async with client_for(gateway) as client:
        money = await call(client, None)
    assert money.outcome is Outcome.UNKNOWN
    assert money.detail == detail
    assert money.amount_idr is None
    assert len(gateway.calls) == 1  # never sent again on our own


@money_calls
@NO_ANSWER
async def test_no_usable_answer_is_an_unknown_reply(
    gateway: FakeGateway, path: str, call: MoneyCall, broken: bytes
) -> None:
    gateway.reply(path, broken)
    async with client_for(gateway) as client:
        reply = await call(client, None)
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.detail.startswith("transport error: ")
    assert len(gateway.calls) == 1


@money_calls
async def test_a_hanging_gateway_is_an_unknown_reply_within_the_budget(
    gateway: FakeGateway, path: str, call: MoneyCall
) -> None:
    gateway.reply(path, hang)
    # The outer bound only catches a hang (it would raise TimeoutError instead).
    async with client_for(gateway) as client, asyncio.timeout(10):
        reply = await call(client, 0.1)
    assert (reply.outcome, reply.detail) == (Outcome.UNKNOWN, "timeout")
    assert len(gateway.calls) == 1


@money_calls
async def test_the_token_fetch_counts_against_a_money_calls_budget(
    gateway: FakeGateway, path: str, call: MoneyCall
) -> None:
    gateway.token_delay = 30
    async with client_for(gateway) as client, asyncio.timeout(10):
        reply = await call(client, 0.1)
    assert (reply.outcome, reply.detail) == (Outcome.UNKNOWN, "timeout")
    assert gateway.calls == []


async def test_without_a_timeout_the_settings_bound_a_money_call(gateway: FakeGateway) -> None:
    gateway.reply("/bank-transfer/", hang)
    async with client_for(gateway, timeout_seconds=0.1) as client, asyncio.timeout(10):
        first = await client.bank_transfer(REQUEST_ID, MOBILE, "014", "1", "A", 50000)
        # A caller with more time left than the configured limit is still capped by it.
        second = await client.bank_transfer(REQUEST_ID, MOBILE, "014", "1", "A", 50000, timeout=60)
    assert first.detail == second.detail == "timeout"
    assert first.outcome is second.outcome is Outcome.UNKNOWN


@money_calls
async def test_no_time_left_sends_nothing_and_is_unknown(
    gateway: FakeGateway, path: str, call: MoneyCall
) -> None:
    async with client_for(gateway) as client:
        reply = await call(client, 0)
    assert reply.outcome is Outcome.UNKNOWN
    assert gateway.tokens_issued == []
    assert gateway.calls == []


@money_calls
async def test_a_refused_token_is_refreshed_and_the_same_request_sent_once_more(
    gateway: FakeGateway, path: str, call: MoneyCall
) -> None:
    gateway.reply(path, httpx.Response(200, json={"code": 140002, "message": "Limit exceeded"}))
    async with client_for(gateway) as client:
        await client.account_inquiry(MOBILE)
        gateway.revoked.add("token-1")
        reply = await call(client, None)
    assert (reply.outcome, reply.rejection) == (Outcome.REJECTED, Rejection.LIMIT_EXCEEDED)
    _, first, second = gateway.calls
    assert first.headers["Authorization"] == "Bearer token-1"
    assert second.headers["Authorization"] == "Bearer token-2"
    assert first.content == second.content
    assert json.loads(second.content)["requestId"] == REQUEST_ID


@money_calls
@pytest.mark.parametrize(
    ("refusal", "calls"),
    [
        ({"code": 401001, "message": "Invalid signature"}, 1),
        ({"code": 401003, "message": "Request date out of range"}, 1),
        ({"code": 401002, "message": "Invalid or expired token"}, 2),
    ],
)
async def test_auth_failures_are_unknown_replies(
    gateway: FakeGateway,
    path: str,
    call: MoneyCall,
    refusal: dict[str, Any],
    calls: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway.reply(path, httpx.Response(401, json=refusal))
    async with client_for(gateway) as client:
        reply = await call(client, None)
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.detail == f"gateway refused the call (code {refusal['code']})"
    assert len(gateway.calls) == calls
    assert any(r.levelno == logging.ERROR for r in caplog.records)


@money_calls
async def test_wrong_hmac_secret_is_an_unknown_reply(
    gateway: FakeGateway, path: str, call: MoneyCall
) -> None:
    async with client_for(gateway, hmac_secret="wrong") as client:
        reply = await call(client, None)
    assert (reply.outcome, reply.detail) == (
        Outcome.UNKNOWN,
        "gateway refused the call (code 401001)",
    )
    assert len(gateway.calls) == 1


@money_calls
@pytest.mark.parametrize(
    ("token_reply", "detail"),
    [
        (
            httpx.Response(401, json={"error": "invalid_client"}),
            "token refused: invalid_client",
        ),
        (httpx.Response(503, text="down"), "token endpoint HTTP 503"),
        (httpx.Response(200, json={"token_type": "bearer"}), "token answer has no access_token"),
    ],
)
async def test_token_failures_are_unknown_replies_and_send_nothing(
    gateway: FakeGateway,
    path: str,
    call: MoneyCall,
    token_reply: httpx.Response,
    detail: str,
) -> None:
    gateway.token_reply = token_reply
    async with client_for(gateway) as client:
        reply = await call(client, None)
    assert (reply.outcome, reply.detail) == (Outcome.UNKNOWN, detail)
    assert gateway.calls == []


async def test_connection_refused_on_a_real_socket_is_an_unknown_reply() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with KasProClient(settings(base_url=f"http://127.0.0.1:{port}")) as client:
        reply = await client.p2p_transfer(REQUEST_ID, MOBILE, ESCROW, 50000, timeout=2)
        status = await client.transaction_status(REQUEST_ID, timeout=2)
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.detail.startswith("transport error")
    assert status.state is TransferState.UNKNOWN
    assert status.detail.startswith("transport error")


async def test_money_builders_still_refuse_our_own_bugs(gateway: FakeGateway) -> None:
    async with client_for(gateway) as client:
        with pytest.raises(ValueError, match="amount"):
            await client.p2p_transfer(REQUEST_ID, MOBILE, ESCROW, 0)
        with pytest.raises(ValueError, match="channel"):
            await client.retail_withdrawal(REQUEST_ID, MOBILE, "7-ELEVEN", 50000)
    assert gateway.calls == []
    assert gateway.tokens_issued == []


# Status inquiry.


async def test_transaction_status_end_to_end(gateway: FakeGateway) -> None:
    found = {
        "code": 0,
        "message": "Berhasil",
        "data": {
            "requestId": REQUEST_ID,
            "reffId": "REF3",
            "status": "SUCCESS",
            "amount": "50000",
            "serviceFee": "2500",
            "type": "BANK_TRANSFER",
        },
    }
    gateway.reply(
        "/transaction-status/",
        httpx.Response(200, json=found),
        httpx.Response(200, json={"code": 150001, "message": "Transaction not found"}),
    )
    async with client_for(gateway) as client:
        done = await client.transaction_status(REQUEST_ID)
        missing = await client.transaction_status(REQUEST_ID)
    assert (done.state, done.reff_id, done.amount_idr, done.fee_idr) == (
        TransferState.SUCCEEDED,
        "REF3",
        50000,
        2500,
    )
    assert missing.state is TransferState.NOT_FOUND
    call = gateway.calls[0]
    assert call.method == "GET"
    assert str(call.url) == f"{gateway.url}/transaction-status/?requestId={REQUEST_ID}"


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (httpx.Response(500, json={"code": 150001}), "HTTP 500"),
        (httpx.Response(200, text="<html>ok</html>"), "HTTP 200 answer is not JSON"),
        (httpx.Response(200, json={"code": 777}), "unknown code 777"),
        (httpx.Response(401, json={"code": 401001}), "gateway refused the call (code 401001)"),
        (httpx.Response(200, json={"code": 0, "data": {"status": "?"}}), "unknown status"),
    ],
)
async def test_transaction_status_never_raises(
    gateway: FakeGateway, reply: httpx.Response, detail: str
) -> None:
    gateway.reply("/transaction-status/", reply)
    async with client_for(gateway) as client:
        status = await client.transaction_status(REQUEST_ID)
    assert (status.state, status.detail) == (TransferState.UNKNOWN, detail)
    assert len(gateway.calls) == 1


async def test_transaction_status_times_out_within_the_budget(gateway: FakeGateway) -> None:
    gateway.reply("/transaction-status/", hang)
    async with client_for(gateway) as client, asyncio.timeout(10):
        status = await client.transaction_status(REQUEST_ID, timeout=0.1)
    assert (status.state, status.detail) == (TransferState.UNKNOWN, "timeout")


# Money logging.


async def test_money_calls_log_the_request_id_and_why_the_outcome_is_unknown(
    gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    masked = {
        "code": 1,
        "responseId": "RSP3",
        "data": {"amount": "4xxx9", "reffId": "REF3", "account": "081234567890"},
    }
    gateway.reply("/bank-transfer/", httpx.Response(200, json=masked))
    caplog.set_level(logging.DEBUG, logger="wallet_service.kaspro")
    async with client_for(gateway) as client:
        reply = await client.bank_transfer(
            REQUEST_ID, MOBILE, "014", "1234567890", "SITI RAHAYU", 50000
        )
    assert (reply.outcome, reply.detail) == (Outcome.UNKNOWN, "malformed amount")
    lines = [r.getMessage() for r in caplog.records if r.name == "wallet_service.kaspro"]
    assert len(lines) == 3  # the token fetch, the call, and why its outcome is unknown
    _, call_line, unknown_line = lines
    assert "POST /bank-transfer/ status=200 code=1" in call_line
    assert f"request_id={REQUEST_ID}" in call_line
    assert "mobile=0812****7890" in call_line
    assert unknown_line == (
        f"kaspro POST /bank-transfer/ outcome unknown: malformed amount request_id={REQUEST_ID}"
    )
    signed = gateway.calls[0]
    for secret in (
        "81234567890",
        "SITI RAHAYU",
        "1234567890",
        "4xxx9",
        "token-1",
        signed.headers["KasPro-Signature"].rsplit('signature="', 1)[1].rstrip('"'),
    ):
        assert all(secret not in line for line in lines)


# The connections: aiohttp's pool, proxies from the environment.


async def test_connections_are_kept_alive_and_bounded_by_max_connections(
    gateway: FakeGateway,
) -> None:
    async with client_for(gateway, max_connections=2) as client:
        for _ in range(5):
            await client.account_inquiry(MOBILE)
        assert len(gateway.connections) == 1  # the token and five calls, one after another
        gateway.call_delay = 0.05
        await asyncio.gather(*(client.account_inquiry(MOBILE) for _ in range(8)))
    assert len(gateway.calls) == 13
    assert len(gateway.connections) == 2


async def test_a_call_given_up_on_never_lends_its_late_answer_to_the_next(
    gateway: FakeGateway,
) -> None:
    # The caller's deadline passes while its answer is on its way: its connection must not
    # be reused, or the next call, on the one connection allowed, would read that answer.
    async def late(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return httpx.Response(200, json=ACCOUNT)

    other = json.loads(json.dumps(ACCOUNT))
    other["data"]["balance"]["availableBalance"] = "999"
    gateway.reply("/customer-account-inquiry/", late, httpx.Response(200, json=other))
    async with client_for(gateway, max_connections=1) as client:
        with pytest.raises(KasProUnavailable, match="timeout"):
            await client.account_inquiry(MOBILE, timeout=0.1)
        account = await client.account_inquiry(MOBILE, timeout=2)
    assert account.balance.available_idr == 999
    assert len(gateway.connections) == 2


async def test_a_gzip_answer_is_decoded(gateway: FakeGateway) -> None:
    body = gzip.compress(json.dumps(ACCOUNT).encode())
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    gateway.reply("/customer-account-inquiry/", head.encode() + body)
    async with client_for(gateway) as client:
        account = await client.account_inquiry(MOBILE)
    assert account.balance.available_idr == 150000


async def test_calls_go_through_the_proxy_the_environment_names(
    gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake gateway plays the proxy too: it gets each request in absolute form.
    monkeypatch.setenv("HTTP_PROXY", gateway.url)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with KasProClient(settings("http://kaspro.invalid")) as client:
        await client.account_inquiry(MOBILE)
    [call] = gateway.calls
    assert (
        str(call.url) == "http://kaspro.invalid/customer-account-inquiry/?mobileNumber=081234567890"
    )
    assert gateway.tokens_issued == ["token-1"]

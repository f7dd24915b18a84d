"""A tiny KasPro partner client for the sandbox tests, written from docs/kaspro.md.

Deliberately independent of wallet_service: if the service's signer and the sandbox's
verifier shared code, a bug in it would pass unnoticed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import httpx

from kaspro_sandbox import SandboxConfig
from wallet_service.domain.qris import crc16_ccitt_false

TOKEN_PATH = "/authentication-server/oauth/token"
CLIENT_ID = "wallet-dev"
CLIENT_SECRET = "wallet-dev-secret"
HMAC_KEY = "wallet-dev-key"
HMAC_SECRET = "wallet-dev-hmac-secret"

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00sandbox id card"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDRsandbox selfie"


class FakeClock:
    """Real time plus an offset a test can move forward; used by the sandbox and the signer."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sign(secret: str, method: str, path: str, date: str) -> str:
    signing_string = f"(request-target): {method.lower()} {path}\ndate: {date}"
    digest = hmac.new(secret.encode(), signing_string.encode(), hashlib.sha256).digest()
    return quote(base64.b64encode(digest).decode(), safe="")


def signature_header(key: str, signature: str) -> str:
    return (
        f'Signature keyId="{key}",algorithm="hmac-sha256",'
        f'headers="(request-target) date",signature="{signature}"'
    )


class Partner:
    """Fetches a token once and signs every call; keyword overrides forge broken calls."""

    def __init__(self, http: httpx.AsyncClient, clock: FakeClock) -> None:
        self.http = http
        self.clock = clock
        self._token: str | None = None

    async def fetch_token(
        self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET
    ) -> httpx.Response:
        return await self.http.post(
            TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            },
        )

    async def token(self) -> str:
        if self._token is None:
            response = await self.fetch_token()
            assert response.status_code == 200, response.text
            self._token = str(response.json()["access_token"])
        return self._token

    def date(self, skew: float = 0.0) -> str:
        return formatdate(self.clock() + skew, usegmt=True)

    async def headers(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        date: str | None = None,
        key: str = HMAC_KEY,
        secret: str = HMAC_SECRET,
    ) -> dict[str, str]:
        date = self.date() if date is None else date
        return {
            "Authorization": f"Bearer {await self.token() if token is None else token}",
            "Date": date,
            "KasPro-Signature": signature_header(key, sign(secret, method, path, date)),
            "Partner-Key": key,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        timeout: float | None = None,
        **signing: Any,
    ) -> httpx.Response:
        """A signed call; `signing` goes to headers(), `headers` replaces, `drop` removes;
        `timeout` replaces the client's for this call.
        """
        sent = await self.headers(method, path, **signing)
        sent.update(headers or {})
        for name in drop:
            del sent[name]
        return await self.http.request(
            method,
            path,
            params=params,
            json=json,
            headers=sent,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )

    async def get(self, path: str, mobile_number: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, params={"mobileNumber": mobile_number}, **kwargs)

    async def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, json=body, **kwargs)

    async def register(
        self, mobile_number: str, request_id: str = "REQ0000000000001", **names: str
    ) -> httpx.Response:
        body = {
            "requestId": request_id,
            "firstName": "Budi",
            "middleName": "",
            "lastName": "Santoso",
            "email": "budi@example.com",
            "mobileNumber": mobile_number,
            "address": "Jl. Kebon Sirih 1",
            "city": "Jakarta Pusat",
            "province": "DKI Jakarta",
            "country": "ID",
            "postalCode": "10340",
            **names,
        }
        return await self.post("/register-customer/", body)

    async def ekyc(
        self,
        mobile_number: str,
        id_card: bytes = JPEG,
        selfie: bytes = PNG,
        selfie_with_id_card: bytes = JPEG,
        request_id: str = "EKYC000000000001",
    ) -> httpx.Response:
        return await self.post(
            "/pil-partner/ekyc-upgrade-premium-inquiry/",
            {
                "requestId": request_id,
                "mobileNumber": mobile_number,
                "idCardImage": b64(id_card),
                "selfieImage": b64(selfie),
                "selfieWithIdCardImage": b64(selfie_with_id_card),
            },
        )


# money

PAYMENT_PATH = "/pil-transaction-payment-to-merchant/"
P2P_PATH = "/p2p-transaction/"
BANK_TRANSFER_PATH = "/bank-transfer/"
QRIS_PATH = "/qris-issuer/"
STATUS_PATH = "/transaction-status/"

ESCROW = "888000000000001"
MERCHANT = "888000000000002"
CORPORATE = "888000000000003"


def request_id(n: int, prefix: str = "RQ") -> str:
    """A well-formed KasPro requestId: 16 upper-case alphanumerics."""
    return f"{prefix}{n:0{16 - len(prefix)}d}"


def tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def qris_payload(merchant_name: str, city: str = "JAKARTA") -> str:
    """A realistic static QRIS payload (nested merchant account template, CRC)."""
    merchant_account = tlv("00", "ID.CO.QRIS.WWW") + tlv("01", "936008990000012345")
    body = (
        tlv("00", "01")
        + tlv("01", "11")
        + tlv("26", merchant_account)
        + tlv("52", "5812")
        + tlv("53", "360")
        + tlv("58", "ID")
        + tlv("59", merchant_name)
        + tlv("60", city)
        + tlv("61", "10340")
        + "6304"
    )
    return body + f"{crc16_ccitt_false(body.encode()):04X}"


class MoneyPartner(Partner):
    """The partner with the money calls of docs/kaspro.md § Money endpoints."""

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, base_url: str) -> AsyncIterator[MoneyPartner]:
        """A partner with its own HTTP client, for a sandbox other than the module's."""
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as http:
            yield cls(http, FakeClock())

    async def reset(self) -> None:
        """Reset the sandbox; its tokens are gone, so fetch a new one next time."""
        await self.control("POST", "/reset")
        self._token = None

    async def customer(self, mobile_number: str, balance: int = 0, premium: bool = False) -> None:
        """Register `mobile_number` (Premium through eKYC when asked) with `balance`."""
        assert (await self.register(mobile_number)).json()["code"] == 0
        if premium:
            assert (await self.ekyc(mobile_number)).json()["code"] == 0
        if balance:
            response = await self.http.post(
                f"/_sandbox/customers/{mobile_number}/balance", json={"balance": balance}
            )
            assert response.status_code == 200, response.text

    async def pay(
        self,
        rid: str,
        mobile_number: str,
        amount: str,
        destination: str = ESCROW,
        reference: str = "TX-RIDE-1",
    ) -> httpx.Response:
        return await self.post(
            PAYMENT_PATH,
            {
                "requestId": rid,
                "mobileNumber": mobile_number,
                "payments": {"pocketId": "2", "amount": amount, "reference": reference},
                "destination": destination,
            },
        )

    async def p2p(
        self, rid: str, source: str, destination: str, amount: str, note: str = "tip"
    ) -> httpx.Response:
        return await self.post(
            P2P_PATH,
            {
                "requestId": rid,
                "mobileNumber": source,
                "destination": destination,
                "amount": amount,
                "pocketId": "2",
                "note": note,
            },
        )

    async def bank_transfer(
        self,
        rid: str,
        mobile_number: str,
        amount: str,
        account_number: str = "1234567890",
        bank_code: str = "014",
        account_name: str = "SITI RAHAYU",
    ) -> httpx.Response:
        return await self.post(
            BANK_TRANSFER_PATH,
            {
                "requestId": rid,
                "mobileNumber": mobile_number,
                "bankCode": bank_code,
                "accountNumber": account_number,
                "accountName": account_name,
                "amount": amount,
            },
        )

    async def retail_withdrawal(
        self, rid: str, mobile_number: str, amount: str, channel: str = "ALFAMART"
    ) -> httpx.Response:
        return await self.post(
            BANK_TRANSFER_PATH,
            {"requestId": rid, "mobileNumber": mobile_number, "channel": channel, "amount": amount},
        )

    async def qris(self, rid: str, mobile_number: str, amount: str, payload: str) -> httpx.Response:
        return await self.post(
            QRIS_PATH,
            {
                "requestId": rid,
                "mobileNumber": mobile_number,
                "qrisPayload": payload,
                "amount": amount,
            },
        )

    async def status(self, rid: str | None = None, reff_id: str | None = None) -> httpx.Response:
        params = {"requestId": rid} if rid is not None else {}
        if reff_id is not None:
            params["reffId"] = reff_id
        return await self.request("GET", STATUS_PATH, params=params)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """A control call that must succeed; its JSON answer."""
        response = await self.http.request(method, f"/_sandbox{path}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def balances(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("GET", "/balances")
        return result

    async def ledger(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.control("GET", "/ledger")
        return result

    async def transaction(self, rid: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("GET", f"/transactions/{rid}")
        return result

    async def wait_for_status(self, rid: str, status: str, timeout: float = 3.0) -> None:
        """Poll the sandbox's view until the transaction has `status`."""
        deadline = time.monotonic() + timeout
        while (await self.transaction(rid))["status"] != status:
            assert time.monotonic() < deadline, f"{rid} never became {status}"
            await asyncio.sleep(0.01)


def money_total(balances: dict[str, Any]) -> int:
    """Subscribers + platform + what went out - what came in: constant while money is exact."""
    flows = balances["externalFlows"].values()
    total: int = (
        sum(balances["subscribers"].values())
        + sum(balances["platform"].values())
        + sum(flow["out"] for flow in flows)
        - sum(flow["in"] for flow in flows)
    )
    return total


def fast_money_config(clock: FakeClock, **overrides: Any) -> SandboxConfig:
    """A sandbox whose async transfers and callback retries are quick enough for tests."""
    settings: dict[str, Any] = {
        "seed": 7,
        "clock": clock,
        "async_delay_seconds": 0.05,
        "callback_retry_delays": (0.02, 0.04, 0.08, 0.16),
        **overrides,
    }
    return SandboxConfig(**settings)

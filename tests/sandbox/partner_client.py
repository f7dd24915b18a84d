"""A tiny KasPro partner client for the sandbox tests, written from docs/kaspro.md.

Deliberately independent of wallet_service: if the service's signer and the sandbox's
verifier shared code, a bug in it would pass unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import httpx

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
        **signing: Any,
    ) -> httpx.Response:
        """A signed call; `signing` goes to headers(), `headers` replaces, `drop` removes."""
        sent = await self.headers(method, path, **signing)
        sent.update(headers or {})
        for name in drop:
            del sent[name]
        return await self.http.request(method, path, params=params, json=json, headers=sent)

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

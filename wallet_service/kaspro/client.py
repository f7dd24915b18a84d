"""The KasPro HTTP client: token, signature, deadlines, and one log line per call (under
the trace id of the work that caused it, which keeps the call's requestId).

Calls go through one aiohttp session: its connection pool, at most ``max_connections``
open (docs/decisions/0004-kaspro-http-aiohttp.md, 0005-kaspro-connection-pool.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
import yarl
from aiohttp.helpers import get_env_proxy_for_url

from wallet_service.domain.account import Account, KycIdentity
from wallet_service.domain.phone import MobileNumber
from wallet_service.kaspro import endpoints
from wallet_service.kaspro.codes import GATEWAY_REFUSALS, INVALID_TOKEN, Outcome, classify
from wallet_service.kaspro.endpoints import (
    HttpRequest,
    MoneyReply,
    Party,
    Registration,
    StatusReply,
    TransferState,
)
from wallet_service.kaspro.errors import KasProAuthError, KasProUnavailable
from wallet_service.kaspro.signing import HmacSigner, Signer
from wallet_service.logs import current_trace
from wallet_service.metrics import Metrics

logger = logging.getLogger("wallet_service.kaspro")

T = TypeVar("T")

# Stands for a body that is not JSON, so that a 401 can still be told apart from others.
_UNREADABLE: Final = object()

CONNECT_TIMEOUT_SECONDS: Final = 3.0
# A token is replaced this long before KasPro says it expires.
TOKEN_REFRESH_MARGIN_SECONDS: Final = 60.0
# An idle connection is closed a little before common servers drop theirs (uvicorn: 5 s),
# so a request rarely meets a connection the server is just closing.
KEEPALIVE_SECONDS: Final = 4.0

# How an exchange ended, for wallet_kaspro_calls_total{outcome}: the class of the KasPro
# code in the answer (codes.py), the HTTP status class when there is none (or a redirect
# or 5xx, whatever its body says), else no answer.
OUTCOMES: Final = (
    "code_succeeded",
    "code_in_process",
    "code_rejected",
    "code_unknown",
    "code_gateway_refused",
    "http_2xx",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "timeout",
    "connection_error",
    "interrupted",
)


@dataclass(frozen=True, slots=True)
class KasProSettings:
    """What the client needs of the configuration (``Config.kaspro_settings``)."""

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    hmac_key: str
    hmac_secret: str = field(repr=False)
    timeout_seconds: float
    ekyc_timeout_seconds: float
    max_connections: int


@dataclass(frozen=True, slots=True)
class _CachedToken:
    value: str = field(repr=False)
    expires_at: float


class KasProClient:
    """Calls KasPro's partner gateway. Share one instance: it holds the connection pool.

    Onboarding and read methods raise KasProRejected for a definite refusal and
    KasProUnavailable when the outcome is unknown. Money methods never raise for
    KasPro's trouble: they return a reply whose outcome is UNKNOWN, since "we do not know"
    is what the caller must record. No transport or JSON exception escapes. ``timeout`` is the
    time left on the caller's deadline (seconds): a plain argument rather than an outer
    asyncio.timeout so that the token fetch, the retry and the exchange share one budget.
    """

    def __init__(
        self,
        settings: KasProSettings,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        # A client of its own (tests) counts into a registry nobody serves.
        self._metrics = metrics or Metrics()
        self._metrics.known_kaspro(endpoints.ENDPOINT_NAMES.values(), OUTCOMES)
        self._metrics.known_inquiry_states(state.value for state in TransferState)
        self._clock = clock
        self._signer: Signer = HmacSigner(settings.hmac_key, settings.hmac_secret, clock=clock)
        self._base_url = settings.base_url.rstrip("/")
        # What precedes our paths on the wire, signed with them (a gateway prefix).
        self._base_path = urlsplit(self._base_url).path
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._proxy: tuple[yarl.URL | None, aiohttp.BasicAuth | None] = (None, None)
        self._token: _CachedToken | None = None
        self._token_lock = asyncio.Lock()
        # Callers wait here, in turn, and sign once they have a place (a fresh Date).
        self._slots = asyncio.Semaphore(settings.max_connections)

    def _pool(self) -> aiohttp.ClientSession:
        """The session, made on the first call, inside the running event loop."""
        if self._closed:
            raise KasProUnavailable("the client is closed")
        if self._session is None:
            # HTTP(S)_PROXY / NO_PROXY are read once: aiohttp's trust_env reads them, and
            # .netrc in a worker thread, on every request.
            with contextlib.suppress(LookupError):  # none named, or NO_PROXY covers KasPro
                self._proxy = get_env_proxy_for_url(yarl.URL(self._base_url))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._settings.max_connections, keepalive_timeout=KEEPALIVE_SECONDS
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS),
            )
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Endpoints.

    async def register_customer(
        self, registration: Registration, *, timeout: float | None = None
    ) -> str:
        """Open a KasPro wallet; returns KasPro's responseId."""
        return await self._call(
            endpoints.register_customer_request(registration),
            endpoints.parse_register_customer,
            mobile=registration.mobile_number,
            seconds=timeout,
        )

    async def request_otp(self, mobile: MobileNumber, *, timeout: float | None = None) -> int:
        """Have KasPro send the customer an OTP; returns its lifetime in seconds."""
        return await self._call(
            endpoints.get_otp_request(mobile),
            endpoints.parse_get_otp,
            mobile=mobile,
            seconds=timeout,
        )

    async def validate_otp(
        self, mobile: MobileNumber, otp: str, *, timeout: float | None = None
    ) -> None:
        await self._call(
            endpoints.validate_otp_request(mobile, otp),
            endpoints.parse_validate_otp,
            mobile=mobile,
            seconds=timeout,
        )

    async def upgrade_kyc(
        self,
        request_id: str,
        mobile: MobileNumber,
        id_card_image: bytes,
        selfie_image: bytes,
        selfie_with_id_card_image: bytes,
        *,
        timeout: float | None = None,
    ) -> KycIdentity:
        """Send the KTP and selfies for OCR; on success the customer becomes Premium."""
        return await self._call(
            endpoints.ekyc_upgrade_request(
                request_id, mobile, id_card_image, selfie_image, selfie_with_id_card_image
            ),
            endpoints.parse_ekyc_upgrade,
            mobile=mobile,
            seconds=timeout,
            limit=self._settings.ekyc_timeout_seconds,
        )

    async def account_inquiry(
        self, mobile: MobileNumber, *, timeout: float | None = None
    ) -> Account:
        account = await self._call(
            endpoints.account_inquiry_request(mobile),
            endpoints.parse_account_inquiry,
            mobile=mobile,
            seconds=timeout,
        )
        if account.mobile_number != mobile:
            logger.error(
                "kaspro account inquiry for %s answered for %s",
                mobile.masked,
                account.mobile_number.masked,
            )
            raise KasProUnavailable("answer is for another mobile number")
        return account

    # Money. One HTTP request each (plus the token rule of _authorised): a second send
    # could move money twice, so only a status inquiry settles an unknown outcome.

    async def pay_to_merchant(
        self,
        request_id: str,
        payer: MobileNumber,
        amount_idr: int,
        reference: str,
        destination: str,
        *,
        timeout: float | None = None,
    ) -> MoneyReply:
        """Move ``amount_idr`` from the payer's wallet to a platform account."""
        return await self._money_call(
            endpoints.payment_to_merchant_request(
                request_id, payer, amount_idr, reference, destination
            ),
            endpoints.parse_money,
            mobile=payer,
            seconds=timeout,
        )

    async def p2p_transfer(
        self,
        request_id: str,
        source: Party,
        destination: Party,
        amount_idr: int,
        note: str = "",
        *,
        timeout: float | None = None,
    ) -> MoneyReply:
        """Move ``amount_idr`` between two wallets (subscribers or platform accounts)."""
        return await self._money_call(
            endpoints.p2p_request(request_id, source, destination, amount_idr, note),
            lambda body: endpoints.parse_p2p(body, destination),
            mobile=_subscriber(source) or _subscriber(destination),
            seconds=timeout,
        )

    async def bank_transfer(
        self,
        request_id: str,
        mobile: MobileNumber,
        bank_code: str,
        account_number: str,
        account_name: str,
        amount_idr: int,
        *,
        timeout: float | None = None,
    ) -> MoneyReply:
        """Cash out to a bank account; the final status comes by callback or inquiry."""
        return await self._money_call(
            endpoints.bank_transfer_request(
                request_id, mobile, bank_code, account_number, account_name, amount_idr
            ),
            endpoints.parse_money,
            mobile=mobile,
            seconds=timeout,
        )

    async def retail_withdrawal(
        self,
        request_id: str,
        mobile: MobileNumber,
        channel: str,
        amount_idr: int,
        *,
        timeout: float | None = None,
    ) -> MoneyReply:
        """Cash out at an ``ALFAMART`` or ``INDOMARET`` till with a withdrawal code."""
        return await self._money_call(
            endpoints.retail_withdrawal_request(request_id, mobile, channel, amount_idr),
            endpoints.parse_money,
            mobile=mobile,
            seconds=timeout,
        )

    async def pay_qris(
        self,
        request_id: str,
        mobile: MobileNumber,
        qris_payload: str,
        amount_idr: int,
        *,
        timeout: float | None = None,
    ) -> MoneyReply:
        """Pay a QRIS merchant from the wallet; settled by callback or inquiry."""
        return await self._money_call(
            endpoints.qris_payment_request(request_id, mobile, qris_payload, amount_idr),
            endpoints.parse_money,
            mobile=mobile,
            seconds=timeout,
        )

    async def transaction_status(
        self, request_id: str, *, timeout: float | None = None
    ) -> StatusReply:
        """Where the money call sent with ``request_id`` stands; never raises either."""
        request = endpoints.transaction_status_request(request_id)
        try:
            body = await self._fetch(request, mobile=None, seconds=timeout)
        except KasProUnavailable as exc:
            reply = StatusReply.unknown(exc.reason)
        else:
            reply = endpoints.parse_transaction_status(body, request_id)
            if reply.state is TransferState.UNKNOWN:
                _log_unknown(request, reply.detail)
        self._metrics.kaspro_status_inquiries.labels(reply.state.value).inc()
        return reply

    # Plumbing.

    async def _call(
        self,
        request: HttpRequest,
        parse: Callable[[Any], T],
        *,
        mobile: MobileNumber,
        seconds: float | None,
        limit: float | None = None,
    ) -> T:
        """Send ``request`` and parse the answer; raises when the outcome is not a success."""
        return parse(await self._fetch(request, mobile=mobile, seconds=seconds, limit=limit))

    async def _money_call(
        self,
        request: HttpRequest,
        parse: Callable[[Any], MoneyReply],
        *,
        mobile: MobileNumber | None,
        seconds: float | None,
    ) -> MoneyReply:
        """Send a money request; any KasPro trouble becomes an UNKNOWN reply, not a raise."""
        try:
            body = await self._fetch(request, mobile=mobile, seconds=seconds)
        except KasProUnavailable as exc:
            return MoneyReply.unknown(exc.reason)
        reply = parse(body)
        if reply.outcome is Outcome.UNKNOWN:
            _log_unknown(request, reply.detail)
        return reply

    async def _fetch(
        self,
        request: HttpRequest,
        *,
        mobile: MobileNumber | None,
        seconds: float | None,
        limit: float | None = None,
    ) -> Any:
        """The decoded answer to ``request``, all within ``seconds`` (the caller's time left)
        and ``limit`` (this endpoint's configured timeout), token fetch included."""
        limit = self._settings.timeout_seconds if limit is None else limit
        budget = limit if seconds is None else min(seconds, limit)
        if budget <= 0:
            raise KasProUnavailable("no time left for the call")
        deadline = asyncio.get_running_loop().time() + budget
        try:
            # The transport's timeouts are per socket operation; this bounds the whole call.
            async with asyncio.timeout_at(deadline):
                return await self._authorised(request, mobile, deadline)
        except TimeoutError:
            raise KasProUnavailable("timeout") from None

    async def _authorised(
        self, request: HttpRequest, mobile: MobileNumber | None, deadline: float
    ) -> Any:
        """The decoded answer, after one token refresh and retry if the token was refused."""
        token = await self._bearer(deadline)
        status, body = await self._send(request, mobile, deadline, token)
        if status == HTTPStatus.UNAUTHORIZED:
            code = endpoints.peek_code(body)
            if code is not None and code != INVALID_TOKEN:
                raise self._auth_error(code)
            token = await self._bearer(deadline, refused=token)
            self._metrics.kaspro_resends.labels("token_refused").inc()
            status, body = await self._send(request, mobile, deadline, token)
            if status == HTTPStatus.UNAUTHORIZED:
                raise self._auth_error(endpoints.peek_code(body))
        # A redirect is not followed (it would go unsigned where KasPro did not document),
        # so whatever its body says, what KasPro did is unknown; so is a 5xx.
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR or 300 <= status < 400:
            raise KasProUnavailable(f"HTTP {status}")
        if body is _UNREADABLE:
            raise KasProUnavailable(f"HTTP {status} answer is not JSON")
        return body

    def _auth_error(self, code: int | None) -> KasProAuthError:
        # Our key, signature or clock is wrong: nothing a retry fixes, so say it loudly.
        logger.error("kaspro gateway refused our credentials: code=%s", code)
        return KasProAuthError(f"gateway refused the call (code {code})", code)

    async def _bearer(self, deadline: float, *, refused: str | None = None) -> str:
        """A token that is not near expiry and is not ``refused``; one refresh at a time."""
        token = self._token
        if token is not None and self._usable(token, refused):
            return token.value
        async with self._token_lock:
            # Another caller may have refreshed while we waited for the lock.
            token = self._token
            if token is not None and self._usable(token, refused):
                return token.value
            self._token = await self._fetch_token(deadline)
            self._metrics.kaspro_token_refreshes.labels(
                "due" if refused is None else "refused"
            ).inc()
            return self._token.value

    def _usable(self, token: _CachedToken, refused: str | None) -> bool:
        margin = TOKEN_REFRESH_MARGIN_SECONDS
        return token.value != refused and self._clock() < token.expires_at - margin

    async def _fetch_token(self, deadline: float) -> _CachedToken:
        settings = self._settings
        request = endpoints.token_request(settings.client_id, settings.client_secret)
        # Counted from before the request so that a slow answer errs towards early refresh.
        asked_at = self._clock()
        status, body = await self._exchange(request, None, deadline, {"Accept": "application/json"})
        if status == HTTPStatus.OK:
            token = endpoints.parse_token(body)
            return _CachedToken(token.value, asked_at + token.expires_in_seconds)
        if status in (HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED):
            reason = endpoints.token_refusal(body)
            logger.error("kaspro %s (HTTP %s)", reason, status)
            raise KasProAuthError(reason)
        raise KasProUnavailable(f"token endpoint HTTP {status}")

    async def _send(
        self, request: HttpRequest, mobile: MobileNumber | None, deadline: float, token: str
    ) -> tuple[int, Any]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        return await self._exchange(request, mobile, deadline, headers, signed=True)

    async def _exchange(
        self,
        request: HttpRequest,
        mobile: MobileNumber | None,
        deadline: float,
        headers: dict[str, str],
        *,
        signed: bool = False,
    ) -> tuple[int, Any]:
        """One HTTP round trip: (status, decoded JSON or _UNREADABLE). Logs one line."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        status: int | None = None
        code: int | None = None
        problem = "interrupted"
        try:
            async with self._slots:
                wire_headers = dict(headers)
                if signed:
                    # Sign what goes on the wire, base URL prefix included, query excluded;
                    # after the wait for a place, so the Date is fresh.
                    target = self._base_path + request.path
                    wire_headers.update(self._signer.headers(request.method, target))
                body = None
                if request.json is not None:
                    body = _json_body(request.json)
                elif request.form is not None:
                    body = urlencode(request.form).encode("ascii")
                    wire_headers["Content-Type"] = "application/x-www-form-urlencoded"
                query = f"?{urlencode(request.query)}" if request.query else ""
                session = self._pool()
                proxy, proxy_auth = self._proxy
                async with session.request(
                    request.method,
                    # Already encoded: sent as is, so the signed path is the one on the wire.
                    yarl.URL(self._base_url + request.path + query, encoded=True),
                    headers=wire_headers,
                    data=body,
                    # A redirect is returned as it is (it would go unsigned where KasPro did
                    # not document); the caller's deadline (_fetch) bounds the rest.
                    allow_redirects=False,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                ) as answer:
                    raw = await answer.read()
            status = answer.status
            body_read = _decode(raw)
            code = endpoints.peek_code(body_read)
            problem = ""
            return answer.status, body_read
        except TimeoutError:
            problem = "timeout"
            raise KasProUnavailable("timeout") from None
        except (aiohttp.ClientError, OSError) as exc:
            problem = type(exc).__name__
            raise KasProUnavailable(f"transport error: {problem}") from exc
        finally:
            _log_call(request, mobile, status, code, loop.time() - started, problem)
            self._count(request, _outcome(status, code, problem), loop.time(), started, deadline)

    def _count(
        self, request: HttpRequest, outcome: str, now: float, started: float, deadline: float
    ) -> None:
        if outcome == "interrupted" and now >= deadline:
            outcome = "timeout"  # cut off by the call's own deadline (_fetch's timeout)
        endpoint = endpoints.ENDPOINT_NAMES[request.path]
        self._metrics.kaspro_calls.labels(endpoint, outcome).inc()
        self._metrics.kaspro_call_seconds.labels(endpoint).observe(now - started)


def _outcome(status: int | None, code: int | None, problem: str) -> str:
    """One of OUTCOMES for an exchange (``problem``: the _exchange's word for no answer)."""
    if problem == "timeout":
        return "timeout"
    if problem == "interrupted":
        return "interrupted"
    if problem or status is None:
        return "connection_error"
    if code is None or status >= HTTPStatus.INTERNAL_SERVER_ERROR or 300 <= status < 400:
        return f"http_{min(max(status // 100, 2), 5)}xx"  # past 599: a server's error too
    if code in GATEWAY_REFUSALS:
        return "code_gateway_refused"
    return f"code_{classify(code)[0].value}"


def _subscriber(party: Party) -> MobileNumber | None:
    return party if isinstance(party, MobileNumber) else None


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _UNREADABLE


def _json_body(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _log_call(
    request: HttpRequest,
    mobile: MobileNumber | None,
    status: int | None,
    code: int | None,
    seconds: float,
    problem: str,
) -> None:
    request_id = _request_id(request)
    trace = current_trace.get()
    if trace is not None and request_id:
        # Listed on the RPC's call-log line, whatever the level of this one.
        trace.note_kaspro_request(request_id)
    failed = bool(problem) or status is None or status >= HTTPStatus.BAD_REQUEST
    level = logging.WARNING if failed else logging.INFO
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        "kaspro %s %s status=%s code=%s duration_ms=%d mobile=%s%s%s",
        request.method,
        request.path,
        "-" if status is None else status,
        "-" if code is None else code,
        round(seconds * 1000),
        "-" if mobile is None else mobile.masked,
        f" request_id={request_id}" if request_id else "",
        f" error={problem}" if problem else "",
    )


def _log_unknown(request: HttpRequest, detail: str) -> None:
    """The answer came back but says nothing definite; the exchange line cannot tell why."""
    logger.warning(
        "kaspro %s %s outcome unknown: %s request_id=%s",
        request.method,
        request.path,
        detail,
        _request_id(request) or "-",
    )


def _request_id(request: HttpRequest) -> str:
    """Our requestId, safe to log: it names an attempt, not a person."""
    value = (request.json or {}).get("requestId") or request.query.get("requestId")
    return value if isinstance(value, str) else ""

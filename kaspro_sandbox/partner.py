"""The KasPro partner gateway's endpoints: the OAuth token and the onboarding calls.

Every path here answers with the shapes of docs/kaspro.md. Signed paths go through
auth.check_partner_call first; every request, signed or not, lands in the request log;
a fault (faults.py) decided for the request delays, replaces or drops the answer, or
stops the request from being carried out (docs/sandbox.md § Faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kaspro_sandbox import codes
from kaspro_sandbox.auth import check_partner_call
from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.faults import GARBAGE_BODY, UNKNOWN_CODE, Injection
from kaspro_sandbox.mobile import is_local_mobile, mask, to_international_number
from kaspro_sandbox.ocr import decode_image, ocr_identity
from kaspro_sandbox.paths import (
    ACCOUNT_INQUIRY_PATH,
    EKYC_PATH,
    GET_OTP_PATH,
    REGISTER_PATH,
    TOKEN_PATH,
    VALIDATE_OTP_PATH,
)
from kaspro_sandbox.state import Customer, IssuedOtp, LoggedRequest, SandboxState
from kaspro_sandbox.transport import NoAnswer, abort_connection, hold, until_disconnected

OTP_CHANNEL = "WhatsApp"
IMAGE_FIELDS = ("idCardImage", "selfieImage", "selfieWithIdCardImage")
OPTIONAL_REGISTRATION_FIELDS = (
    "middleName",
    "lastName",
    "email",
    "address",
    "city",
    "province",
    "country",
    "postalCode",
)
REQUEST_ID_PATTERN = re.compile(r"[A-Z0-9]{16}")

logger = logging.getLogger("kaspro_sandbox")


class InvalidRequest(Exception):
    """A field is missing or malformed: the gateway answers 400001 naming it."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field

    @property
    def message(self) -> str:
        return f"Invalid request: {self.field}"


@dataclass(frozen=True)
class Reply:
    """An answer before it becomes HTTP: status and JSON body."""

    status: int
    body: dict[str, Any]
    # The callback fault given to the transfer this call created (for the request log).
    callback_fault: str | None = None

    @property
    def code(self) -> int | None:
        code = self.body.get("code")
        return code if isinstance(code, int) else None


@dataclass(frozen=True)
class PartnerCall:
    """One incoming call, read once: `fields` is the JSON body when it is an object."""

    method: str
    path: str
    query: Mapping[str, str]
    raw_body: bytes
    fields: dict[str, Any] | None
    received_at: float
    # The fault or script step decided for this call; handlers act on the kinds that
    # change what is executed (in_process_forever, in_process, success, fail).
    injection: Injection | None = None

    @property
    def injected(self) -> str | None:
        return self.injection.kind if self.injection is not None else None

    def json_object(self) -> dict[str, Any]:
        if self.fields is None:
            raise InvalidRequest("body")
        return self.fields

    def logged_value(self, name: str) -> str | None:
        value = self.query.get(name)
        if value is None and self.fields is not None:
            value = self.fields.get(name)
        return value if isinstance(value, str) else None


Handler = Callable[[PartnerCall], Reply]
# The requestId a call is about (scripts are kept per requestId); None when it has none.
Reference = Callable[[PartnerCall], str | None]

BAD_GATEWAY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)
GATEWAY_TIMEOUT_PAGE = (
    "<html><head><title>504 Gateway Time-out</title></head>"
    "<body><center><h1>504 Gateway Time-out</h1></center></body></html>"
)


def success(**extra: Any) -> Reply:
    return Reply(200, {"message": codes.MESSAGES[codes.SUCCESS], "code": codes.SUCCESS, **extra})


def failure(code: int) -> Reply:
    return Reply(200, {"code": code, "message": codes.MESSAGES[code]})


def _registered(response_id: str) -> Reply:
    """Register-customer success, keys in the seed's order: responseId, message, code."""
    return Reply(
        200,
        {"responseId": response_id, "message": codes.MESSAGES[codes.SUCCESS], "code": 0},
    )


def _text(fields: Mapping[str, Any], name: str) -> str:
    """An optional string field: absent or null is empty, any other type is invalid."""
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(name)
    return value.strip()


def _required_text(fields: Mapping[str, Any], name: str) -> str:
    value = _text(fields, name)
    if not value:
        raise InvalidRequest(name)
    return value


def _lifetime_text(seconds: int) -> str:
    if seconds % 60 == 0:
        return f"{seconds // 60} menit"
    return f"{seconds} detik"


def _parse_json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _fault_response(kind: str) -> Response | None:
    """The answer a fault gives instead of the real one; None for the kinds that answer
    the real reply (latency, in-process and script steps).
    """
    if kind == "http_500":
        return PlainTextResponse("Internal Server Error", status_code=500)
    if kind == "http_502":
        return HTMLResponse(BAD_GATEWAY_PAGE, status_code=502)
    if kind == "http_503":
        return PlainTextResponse("Service Unavailable", status_code=503)
    if kind in ("timeout_before", "timeout_after"):
        return HTMLResponse(GATEWAY_TIMEOUT_PAGE, status_code=504)
    if kind == "garbage":
        return Response(GARBAGE_BODY, status_code=200, media_type="application/json")
    if kind == "unknown_code":
        return JSONResponse({"code": UNKNOWN_CODE, "message": "Unexpected"})
    return None


def _reply_response(reply: Reply) -> Response:
    return JSONResponse(reply.body, status_code=reply.status)


class PartnerGateway:
    """The partner-facing paths of the fake gateway, bound to one config and state."""

    def __init__(self, config: SandboxConfig, state: SandboxState) -> None:
        self.config = config
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route(TOKEN_PATH, self.endpoint(self.issue_token, signed=False), methods=["POST"]),
            Route(REGISTER_PATH, self.endpoint(self.register_customer), methods=["POST"]),
            Route(GET_OTP_PATH, self.endpoint(self.request_otp), methods=["GET"]),
            Route(VALIDATE_OTP_PATH, self.endpoint(self.validate_otp), methods=["POST"]),
            Route(EKYC_PATH, self.endpoint(self.upgrade_premium), methods=["POST"]),
            Route(ACCOUNT_INQUIRY_PATH, self.endpoint(self.account_inquiry), methods=["GET"]),
        ]

    def endpoint(
        self, handler: Handler, *, signed: bool = True, reference: Reference | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        """Serve `handler` as a gateway path: auth check, faults, request log.

        `reference` names the requestId a call is about, for scripted faults.
        """

        async def endpoint(request: Request) -> Response:
            raw_body = await request.body()
            call = PartnerCall(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                raw_body=raw_body,
                fields=_parse_json_object(raw_body) if raw_body else None,
                received_at=self.config.clock(),
            )
            refusal = None
            if signed:
                refusal = check_partner_call(
                    call.method, call.path, request.headers, self.config, self.state
                )
            if refusal is not None:
                reply = Reply(401, {"code": refusal.code, "message": refusal.message})
                self._log(call, reply.code, reply.status)
                return _reply_response(reply)

            request_id = reference(call) if reference is not None else None
            injection = self.state.faults.decide(call.path, request_id)
            if injection is None:
                reply = self._execute(handler, call)
                self._log(call, reply.code, reply.status, callback_fault=reply.callback_fault)
                return _reply_response(reply)
            return await self._inject(request, handler, replace(call, injection=injection))

        return endpoint

    @staticmethod
    def _execute(handler: Handler, call: PartnerCall) -> Reply:
        try:
            return handler(call)
        except InvalidRequest as exc:
            return Reply(400, {"code": codes.INVALID_REQUEST, "message": exc.message})

    async def _inject(self, request: Request, handler: Handler, call: PartnerCall) -> Response:
        """Answer a call a fault or script step was decided for (docs/sandbox.md § Faults):
        carry it out unless the kind forbids it, wait, then answer, fail or drop.
        """
        injection = call.injection
        assert injection is not None
        # Everything up to the wait happens at once, so the draws and the money moves
        # keep the order of the requests.
        reply = self._execute(handler, call) if injection.executes else None
        response = _fault_response(injection.kind)
        callback_fault = reply.callback_fault if reply is not None else None
        if injection.kind == "reset":
            self._log(call, None, None, injection, callback_fault)
        elif response is not None:
            code = UNKNOWN_CODE if injection.kind == "unknown_code" else None
            self._log(call, code, response.status_code, injection, callback_fault)
        else:
            assert reply is not None  # kinds without their own answer are carried out
            self._log(call, reply.code, reply.status, injection, callback_fault)
            response = _reply_response(reply)
        await hold(request.receive, injection.wait_seconds)
        if response is None:  # reset
            return await self._reset(request)
        return response

    @staticmethod
    async def _reset(request: Request) -> Response:
        """Drop the connection without a word (a TCP RST)."""
        if not abort_connection(request.scope):
            # Not served by uvicorn's h11/httptools: let the server deal with an error.
            raise ConnectionResetError("KasPro sandbox fault: connection reset")
        # Let the server see the connection go before the (empty) response is "sent".
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await until_disconnected(request.receive)
        return NoAnswer()

    def _log(
        self,
        call: PartnerCall,
        code: int | None,
        status: int | None,
        injection: Injection | None = None,
        callback_fault: str | None = None,
    ) -> None:
        mobile = call.logged_value("mobileNumber")
        self.state.log_request(
            LoggedRequest(
                time=call.received_at,
                method=call.method,
                path=call.path,
                mobile_number=mask(mobile) if mobile else None,
                request_id=call.logged_value("requestId"),
                code=code,
                http_status=status,
                fault=injection.fault if injection is not None else None,
                fault_rule=injection.rule_id if injection is not None else None,
                script_step=injection.step if injection is not None else None,
                callback_fault=callback_fault,
            )
        )

    def _customer(self, mobile: str) -> Customer | None:
        return self.state.customers.get(mobile)

    def issue_token(self, call: PartnerCall) -> Reply:
        form = {
            name: values[0]
            for name, values in parse_qs(
                call.raw_body.decode("utf-8", "replace"), keep_blank_values=True
            ).items()
        }
        good_id = hmac.compare_digest(
            form.get("client_id", "").encode(), self.config.client_id.encode()
        )
        good_secret = hmac.compare_digest(
            form.get("client_secret", "").encode(), self.config.client_secret.encode()
        )
        if not (good_id and good_secret):
            return Reply(
                401, {"error": "invalid_client", "error_description": "Bad client credentials"}
            )
        if form.get("grant_type") != "client_credentials":
            return Reply(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Unsupported grant type",
                },
            )
        ttl = self.config.token_ttl_seconds
        token = self.state.issue_token(call.received_at, ttl)
        return Reply(
            200,
            {"access_token": token, "token_type": "bearer", "expires_in": ttl, "scope": "partner"},
        )

    def register_customer(self, call: PartnerCall) -> Reply:
        sent_id = (call.fields or {}).get("requestId")
        try:
            fields = call.json_object()
            request_id = _text(fields, "requestId")
            if REQUEST_ID_PATTERN.fullmatch(request_id) is None:
                raise InvalidRequest("requestId")
            mobile = _text(fields, "mobileNumber")
            if not is_local_mobile(mobile):
                raise InvalidRequest("mobileNumber")
            first_name = _required_text(fields, "firstName")
            optional = {name: _text(fields, name) for name in OPTIONAL_REGISTRATION_FIELDS}
        except InvalidRequest as exc:
            response_id = sent_id if isinstance(sent_id, str) else ""
            return Reply(
                400,
                {"responseId": response_id, "code": codes.INVALID_REQUEST, "message": exc.message},
            )

        existing = self._customer(mobile)
        if existing is not None:
            if existing.register_request_id == request_id:
                return _registered(existing.register_response_id)
            return Reply(
                200,
                {
                    "responseId ": self.state.new_response_id(call.received_at),
                    "code": codes.ALREADY_REGISTERED,
                    "message": codes.MESSAGES[codes.ALREADY_REGISTERED],
                },
            )

        response_id = self.state.new_response_id(call.received_at)
        self.state.customers[mobile] = Customer(
            mobile_number=mobile,
            first_name=first_name,
            middle_name=optional["middleName"],
            last_name=optional["lastName"],
            email=optional["email"],
            address=optional["address"],
            city=optional["city"],
            province=optional["province"],
            country=optional["country"],
            postal_code=optional["postalCode"],
            register_request_id=request_id,
            register_response_id=response_id,
            registered_at=call.received_at,
        )
        return _registered(response_id)

    def request_otp(self, call: PartnerCall) -> Reply:
        mobile = _required_text(call.query, "mobileNumber")
        if self._customer(mobile) is None:
            return failure(codes.CUSTOMER_NOT_FOUND)
        ttl = self.config.otp_ttl_seconds
        code = self.state.new_otp_code()
        message = (
            f"Kode OTP KasPro Anda {code}. Berlaku {_lifetime_text(ttl)}. "
            "JANGAN berikan kode ini kepada siapa pun."
        )
        self.state.otps[mobile] = IssuedOtp(
            mobile_number=mobile,
            code=code,
            expires_at=call.received_at + ttl,
            message=message,
            channel=OTP_CHANNEL,
        )
        # Showing the real OTP is the point of a sandbox, so it goes to the terminal (the
        # "phone"). The log line leaves the code out: in-process, the sandbox shares the
        # service's logs, which must never hold an OTP.
        print(f"[KasPro sandbox] {OTP_CHANNEL} to {mask(mobile)}: {message}", flush=True)
        logger.info("sent an OTP by %s to %s", OTP_CHANNEL, mask(mobile))
        return success(data={"expiry": ttl})

    def validate_otp(self, call: PartnerCall) -> Reply:
        fields = call.json_object()
        mobile = _required_text(fields, "mobileNumber")
        otp = _required_text(fields, "otp")
        if self._customer(mobile) is None:
            return failure(codes.CUSTOMER_NOT_FOUND)
        issued = self.state.otps.get(mobile)
        if issued is None or call.received_at >= issued.expires_at:
            return failure(codes.OTP_EXPIRED)
        if not hmac.compare_digest(issued.code.encode(), otp.encode()):
            return failure(codes.INVALID_OTP)
        del self.state.otps[mobile]
        return success()

    def upgrade_premium(self, call: PartnerCall) -> Reply:
        fields = call.json_object()
        request_id = _required_text(fields, "requestId")
        mobile = _required_text(fields, "mobileNumber")
        encoded_images: list[str] = []
        for name in IMAGE_FIELDS:
            value = fields.get(name)
            if not isinstance(value, str):
                raise InvalidRequest(name)
            encoded_images.append(value)
        customer = self._customer(mobile)
        if customer is None:
            return failure(codes.CUSTOMER_NOT_FOUND)
        images = [decode_image(value) for value in encoded_images]
        id_card_image = images[0]
        if id_card_image is None or None in images:
            return failure(codes.INVALID_IMAGE)

        identity = ocr_identity(id_card_image, customer.full_name)
        override = self.state.ocr_overrides.pop(mobile, None)
        if override is not None:
            identity["idCardNumber"] = override
        customer.account_type = "Premium"
        customer.kyc_status = "Verified"
        customer.id_card_number = identity["idCardNumber"]
        return Reply(
            200,
            {
                "code": codes.SUCCESS,
                "message": codes.MESSAGES[codes.SUCCESS],
                "data": {"requestId": request_id, **identity},
            },
        )

    def account_inquiry(self, call: PartnerCall) -> Reply:
        mobile = _required_text(call.query, "mobileNumber")
        customer = self._customer(mobile)
        if customer is None:
            return failure(codes.CUSTOMER_NOT_FOUND)
        return Reply(
            200,
            {
                "code": codes.SUCCESS,
                "message": codes.MESSAGES[codes.SUCCESS],
                "data": {
                    "firstName": customer.first_name,
                    "middleName": customer.middle_name,
                    "lastName": customer.last_name,
                    "fullName": customer.full_name,
                    "accountType": customer.account_type,
                    "accountStatus": customer.account_status,
                    "customerType": customer.customer_type,
                    "email": customer.email,
                    "mobileNumber": to_international_number(customer.mobile_number),
                    "kycStatus": customer.kyc_status,
                    "balance": {
                        "pocketId": customer.pocket_id,
                        "availableBalance": str(customer.balance),
                    },
                },
            },
        )

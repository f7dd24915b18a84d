"""The `/_sandbox/` control endpoints: read OTPs, inspect and set state, arm faults, reset.

A loopback developer tool, not part of KasPro: no auth, plain `{"error": …}` failures.
Mobile numbers may be given as `08…`, `628…` or `+628…`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.faults import FAULT_KINDS, Fault, FaultKind
from kaspro_sandbox.mobile import to_local
from kaspro_sandbox.partner import GATEWAY_PATHS
from kaspro_sandbox.state import IssuedOtp, SandboxState

PREFIX = "/_sandbox"

Json = dict[str, Any] | list[dict[str, Any]]
ControlHandler = Callable[[Request], Awaitable[Json]]


class ControlError(Exception):
    """A control request the sandbox cannot honour: HTTP `status` with `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _local_number(value: str | None) -> str:
    local = to_local(value or "")
    if local is None:
        raise ControlError(400, "mobileNumber must be an Indonesian mobile number")
    return local


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ControlError(400, "body must be a JSON object")
    return body


def _int_field(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(400, f"{name} must be an integer")
    return value


def _fault_from(body: dict[str, Any]) -> Fault:
    path = body.get("path")
    if path not in GATEWAY_PATHS:
        raise ControlError(400, f"path must be one of {', '.join(GATEWAY_PATHS)}")
    kind = body.get("kind")
    if kind not in FAULT_KINDS:
        raise ControlError(400, f"kind must be one of {', '.join(FAULT_KINDS)}")
    times = _int_field(body, "times", 1)
    if times < 1:
        raise ControlError(400, "times must be at least 1")
    delay = body.get("delaySeconds", 0.0)
    if kind == "delay" and "delaySeconds" not in body:
        raise ControlError(400, "delaySeconds is required for a delay")
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ControlError(400, "delaySeconds must be a non-negative number")
    fault_kind: FaultKind = kind
    return Fault(path=path, kind=fault_kind, remaining=times, delay_seconds=float(delay))


class ControlApi:
    """The control endpoints, bound to one config and state."""

    def __init__(self, config: SandboxConfig, state: SandboxState) -> None:
        self.config = config
        self.state = state

    def routes(self) -> list[Route]:
        handlers: list[tuple[str, str, ControlHandler]] = [
            ("/otp", "GET", self.get_otp),
            ("/otp/expire", "POST", self.expire_otp),
            ("/customers", "GET", self.list_customers),
            ("/customers/{mobileNumber}", "GET", self.get_customer),
            ("/customers/{mobileNumber}/balance", "POST", self.set_balance),
            ("/ocr-override", "POST", self.set_ocr_override),
            ("/requests", "GET", self.list_requests),
            ("/requests", "DELETE", self.clear_requests),
            ("/faults", "GET", self.list_faults),
            ("/faults", "POST", self.arm_fault),
            ("/faults", "DELETE", self.clear_faults),
            ("/tokens/expire", "POST", self.expire_tokens),
            ("/reset", "POST", self.reset),
        ]
        by_path: dict[str, dict[str, ControlHandler]] = {}
        for path, method, handler in handlers:
            by_path.setdefault(path, {})[method] = handler
        return [
            Route(PREFIX + path, self._endpoint(methods), methods=list(methods))
            for path, methods in by_path.items()
        ]

    def _endpoint(
        self, methods: dict[str, ControlHandler]
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                body = await methods[request.method](request)
            except ControlError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            return JSONResponse(body)

        return endpoint

    def _otp(self, request: Request) -> IssuedOtp:
        mobile = _local_number(request.query_params.get("mobileNumber"))
        otp = self.state.otps.get(mobile)
        if otp is None:
            raise ControlError(404, "no OTP for this number")
        return otp

    async def get_otp(self, request: Request) -> Json:
        return self._otp(request).to_json()

    async def expire_otp(self, request: Request) -> Json:
        otp = self._otp(request)
        otp.expires_at = min(otp.expires_at, self.config.clock())
        return otp.to_json()

    async def list_customers(self, request: Request) -> Json:
        return [customer.to_json() for customer in self.state.customers.values()]

    async def get_customer(self, request: Request) -> Json:
        mobile = _local_number(request.path_params["mobileNumber"])
        customer = self.state.customers.get(mobile)
        if customer is None:
            raise ControlError(404, "no customer with this number")
        return customer.to_json()

    async def set_balance(self, request: Request) -> Json:
        mobile = _local_number(request.path_params["mobileNumber"])
        body = await _json_object(request)
        customer = self.state.customers.get(mobile)
        if customer is None:
            raise ControlError(404, "no customer with this number")
        balance = _int_field(body, "balance")
        if balance < 0:
            raise ControlError(400, "balance must not be negative")
        customer.balance = balance
        return customer.to_json()

    async def set_ocr_override(self, request: Request) -> Json:
        body = await _json_object(request)
        mobile = _local_number(str(body.get("mobileNumber", "")))
        id_card_number = body.get("idCardNumber")
        if not isinstance(id_card_number, str):
            raise ControlError(400, "idCardNumber must be a string")
        self.state.ocr_overrides[mobile] = id_card_number
        return {"mobileNumber": mobile, "idCardNumber": id_card_number}

    async def list_requests(self, request: Request) -> Json:
        return [entry.to_json() for entry in self.state.requests]

    async def clear_requests(self, request: Request) -> Json:
        cleared = len(self.state.requests)
        self.state.requests.clear()
        return {"cleared": cleared}

    async def list_faults(self, request: Request) -> Json:
        return self.state.faults.to_json()

    async def arm_fault(self, request: Request) -> Json:
        fault = _fault_from(await _json_object(request))
        self.state.faults.arm(fault)
        return fault.to_json()

    async def clear_faults(self, request: Request) -> Json:
        self.state.faults.clear()
        return self.state.faults.to_json()

    async def expire_tokens(self, request: Request) -> Json:
        now = self.config.clock()
        for token, expires_at in self.state.tokens.items():
            self.state.tokens[token] = min(expires_at, now)
        return {"expired": len(self.state.tokens)}

    async def reset(self, request: Request) -> Json:
        self.state.reset()
        return {"reset": True}

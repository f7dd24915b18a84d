"""The `/_sandbox/` control endpoints: read OTPs, inspect and set state, arm faults and
scripts and read their counters, move money in (top-ups), settle async transfers by hand,
read the journal and callbacks, reset.

A loopback developer tool, not part of KasPro: no auth, plain `{"error": …}` failures.
Mobile numbers may be given as `08…`, `628…` or `+628…`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.faults import FaultSpecError
from kaspro_sandbox.mobile import to_local
from kaspro_sandbox.money import (
    EXTERNAL_RETAIL,
    EXTERNAL_VA,
    TOPUP_CHANNELS,
    MoneyTransaction,
    PlatformWallet,
    Status,
    is_digits,
)
from kaspro_sandbox.settlement import NotPending, Settlement
from kaspro_sandbox.state import Customer, IssuedOtp, SandboxState

PREFIX = "/_sandbox"
SETTINGS = ("async_delay_seconds", "auto_complete", "cash_out_fee")

Json = dict[str, Any] | list[dict[str, Any]]
ControlHandler = Callable[[Request], Awaitable[Json | JSONResponse]]
# The request log's answer says how many older entries it no longer holds.
DROPPED_HEADER = "X-Sandbox-Requests-Dropped"


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


async def _optional_json_object(request: Request) -> dict[str, Any]:
    """The JSON object body, or {} when the body is empty."""
    if not (await request.body()).strip():
        return {}
    return await _json_object(request)


def _message(body: dict[str, Any]) -> str | None:
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise ControlError(400, "message must be a string")
    return message or None


def _int_field(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(400, f"{name} must be an integer")
    return value


def _balance(body: dict[str, Any]) -> int:
    balance = _int_field(body, "balance")
    if balance < 0:
        raise ControlError(400, "balance must not be negative")
    return balance


class ControlApi:
    """The control endpoints, bound to one config and state."""

    def __init__(
        self, config: SandboxConfig, state: SandboxState, settlement: Settlement | None = None
    ) -> None:
        self.config = config
        self.state = state
        self.settlement = settlement if settlement is not None else Settlement(config, state)

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
            ("/faults/script", "GET", self.list_scripts),
            ("/faults/script", "POST", self.arm_script),
            ("/faults/script", "DELETE", self.clear_scripts),
            ("/faults/stats", "GET", self.fault_stats),
            ("/faults/stats", "DELETE", self.clear_fault_stats),
            ("/faults/{ruleId:int}", "DELETE", self.remove_fault),
            ("/tokens/expire", "POST", self.expire_tokens),
            ("/reset", "POST", self.reset),
            ("/topup", "POST", self.topup),
            ("/transactions", "GET", self.list_transactions),
            ("/transactions/{requestId}", "GET", self.get_transaction),
            ("/transactions/{requestId}/complete", "POST", self.complete_transaction),
            ("/transactions/{requestId}/fail", "POST", self.fail_transaction),
            ("/transactions/{requestId}/resend-callback", "POST", self.resend_callback),
            ("/wallets", "GET", self.list_wallets),
            ("/wallets/{account}/balance", "POST", self.set_wallet_balance),
            ("/balances", "GET", self.balances),
            ("/ledger", "GET", self.ledger),
            ("/callbacks", "GET", self.list_callbacks),
            ("/callbacks", "DELETE", self.clear_callbacks),
            ("/callback-url", "GET", self.get_callback_url),
            ("/callback-url", "POST", self.set_callback_url),
            ("/settings", "GET", self.get_settings),
            ("/settings", "POST", self.change_settings),
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
            return body if isinstance(body, JSONResponse) else JSONResponse(body)

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

    def _customer(self, mobile: str) -> Customer:
        customer = self.state.customers.get(mobile)
        if customer is None:
            raise ControlError(404, "no customer with this number")
        return customer

    async def get_customer(self, request: Request) -> Json:
        return self._customer(_local_number(request.path_params["mobileNumber"])).to_json()

    async def set_balance(self, request: Request) -> Json:
        mobile = _local_number(request.path_params["mobileNumber"])
        body = await _json_object(request)
        customer = self._customer(mobile)
        customer.balance = _balance(body)
        return customer.to_json()

    async def set_ocr_override(self, request: Request) -> Json:
        body = await _json_object(request)
        mobile = _local_number(str(body.get("mobileNumber", "")))
        id_card_number = body.get("idCardNumber")
        if not isinstance(id_card_number, str):
            raise ControlError(400, "idCardNumber must be a string")
        self.state.ocr_overrides[mobile] = id_card_number
        return {"mobileNumber": mobile, "idCardNumber": id_card_number}

    async def list_requests(self, request: Request) -> JSONResponse:
        return JSONResponse(
            [entry.to_json() for entry in self.state.requests],
            headers={DROPPED_HEADER: str(self.state.requests_dropped)},
        )

    async def clear_requests(self, request: Request) -> Json:
        return {"cleared": self.state.clear_requests()}

    async def list_faults(self, request: Request) -> Json:
        return self.state.faults.to_json()

    async def arm_fault(self, request: Request) -> Json:
        try:
            rule = self.state.faults.arm(await _json_object(request))
        except FaultSpecError as exc:
            raise ControlError(400, str(exc)) from None
        return rule.to_json()

    async def clear_faults(self, request: Request) -> Json:
        """Disarm every rule and script; the stats stay."""
        self.state.faults.clear()
        return self.state.faults.to_json()

    async def remove_fault(self, request: Request) -> Json:
        rule = self.state.faults.remove(request.path_params["ruleId"])
        if rule is None:
            raise ControlError(404, "no fault rule with this id")
        return rule.to_json()

    async def list_scripts(self, request: Request) -> Json:
        return self.state.faults.scripts_json()

    async def arm_script(self, request: Request) -> Json:
        try:
            script = self.state.faults.add_script(await _json_object(request))
        except FaultSpecError as exc:
            raise ControlError(400, str(exc)) from None
        return script.to_json()

    async def clear_scripts(self, request: Request) -> Json:
        cleared = len(self.state.faults.scripts)
        self.state.faults.scripts.clear()
        return {"cleared": cleared}

    async def fault_stats(self, request: Request) -> Json:
        return self.state.faults.stats_json()

    async def clear_fault_stats(self, request: Request) -> Json:
        self.state.faults.clear_stats()
        return self.state.faults.stats_json()

    async def expire_tokens(self, request: Request) -> Json:
        now = self.config.clock()
        for token, expires_at in self.state.tokens.items():
            self.state.tokens[token] = min(expires_at, now)
        return {"expired": len(self.state.tokens)}

    async def reset(self, request: Request) -> Json:
        self.state.reset()
        return {"reset": True}

    # money

    async def topup(self, request: Request) -> Json:
        """Credit a top-up as KasPro would after a VA transfer or a cash payment at an outlet,
        then call back (type TOPUP); the answer is the callback body.
        """
        body = await _json_object(request)
        mobile = _local_number(str(body.get("mobileNumber", "")))
        amount = _int_field(body, "amount")
        if amount <= 0:
            raise ControlError(400, "amount must be a positive integer")
        channel = body.get("channel")
        if channel not in TOPUP_CHANNELS:
            raise ControlError(400, f"channel must be one of {', '.join(TOPUP_CHANNELS)}")
        if channel == "VA":
            number_field, source = "vaNumber", EXTERNAL_VA
        else:
            number_field, source = "paymentCode", EXTERNAL_RETAIL
        number = body.get(number_field)
        if not is_digits(number):
            raise ControlError(400, f"{number_field} must be a string of digits")
        customer = self._customer(mobile)
        if self.state.would_break_cap(customer, amount):
            cap = self.state.balance_cap(customer)
            raise ControlError(
                409, f"the top-up would put the balance over its cap of {cap} (140002)"
            )
        transaction = self.settlement.credit_topup(
            mobile, amount, source, {"channel": str(channel), number_field: str(number)}
        )
        assert transaction.callback_body is not None
        return transaction.callback_body

    def _transaction(self, request: Request) -> MoneyTransaction:
        transaction = self.state.transactions.get(request.path_params["requestId"])
        if transaction is None:
            raise ControlError(404, "no transaction with this requestId")
        return transaction

    async def list_transactions(self, request: Request) -> Json:
        return [transaction.to_json() for transaction in self.state.transactions.values()]

    async def get_transaction(self, request: Request) -> Json:
        return self._transaction(request).to_json()

    async def _settle(self, request: Request, status: Status) -> Json:
        transaction = self._transaction(request)
        message = _message(await _optional_json_object(request))
        try:
            self.settlement.settle(transaction, status, message)
        except NotPending:
            raise ControlError(409, f"transaction is {transaction.status}, not PENDING") from None
        return transaction.to_json()

    async def complete_transaction(self, request: Request) -> Json:
        return await self._settle(request, "SUCCESS")

    async def fail_transaction(self, request: Request) -> Json:
        return await self._settle(request, "FAILED")

    async def resend_callback(self, request: Request) -> Json:
        transaction = self._transaction(request)
        if transaction.callback_body is None:
            raise ControlError(409, "the transaction has no final callback (yet)")
        if not self.settlement.send_callback(transaction, with_fault=False):
            raise ControlError(409, "no callback URL is set")
        return transaction.callback_body

    def _wallet(self, account: str) -> PlatformWallet:
        wallet = self.state.wallets.get(account)
        if wallet is None:
            by_name = [w for w in self.state.wallets.values() if w.name == account]
            if not by_name:
                raise ControlError(404, "no platform wallet with this account number")
            wallet = by_name[0]
        return wallet

    async def list_wallets(self, request: Request) -> Json:
        return [wallet.to_json() for wallet in self.state.wallets.values()]

    async def set_wallet_balance(self, request: Request) -> Json:
        wallet = self._wallet(request.path_params["account"])
        wallet.balance = _balance(await _json_object(request))
        return wallet.to_json()

    async def balances(self, request: Request) -> Json:
        return self.state.balances()

    async def ledger(self, request: Request) -> Json:
        return [entry.to_json() for entry in self.state.journal]

    async def list_callbacks(self, request: Request) -> Json:
        return [attempt.to_json() for attempt in self.state.callbacks]

    async def clear_callbacks(self, request: Request) -> Json:
        cleared = len(self.state.callbacks)
        self.state.callbacks.clear()
        return {"cleared": cleared}

    async def get_callback_url(self, request: Request) -> Json:
        return {"url": self.state.settings.callback_url}

    async def set_callback_url(self, request: Request) -> Json:
        url = (await _json_object(request)).get("url")
        if url is not None:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                raise ControlError(400, "url must be an http(s) URL or null")
        self.state.settings.callback_url = url
        return {"url": url}

    async def get_settings(self, request: Request) -> Json:
        return self.state.settings.to_json()

    async def change_settings(self, request: Request) -> Json:
        body = await _json_object(request)
        unknown = sorted(set(body) - set(SETTINGS))
        if unknown:
            raise ControlError(400, f"unknown settings: {', '.join(unknown)}")
        settings = self.state.settings
        delay = body.get("async_delay_seconds", settings.async_delay_seconds)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ControlError(400, "async_delay_seconds must be a non-negative number")
        auto_complete = body.get("auto_complete", settings.auto_complete)
        if not isinstance(auto_complete, bool):
            raise ControlError(400, "auto_complete must be true or false")
        fee = _int_field(body, "cash_out_fee", settings.cash_out_fee)
        if fee < 0:
            raise ControlError(400, "cash_out_fee must not be negative")
        settings.async_delay_seconds = float(delay)
        settings.auto_complete = auto_complete
        settings.cash_out_fee = fee
        return settings.to_json()

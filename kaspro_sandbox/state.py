"""Everything the sandbox remembers: customers, OTPs, tokens, OCR overrides, faults, request log,
platform wallets, money transactions, the journal, callback tries and background tasks.

All of it lives in memory and disappears with the process or on `reset()`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.faults import FaultTable
from kaspro_sandbox.money import (
    EXTERNAL_PARTIES,
    EXTERNAL_PREFIX,
    CallbackAttempt,
    JournalEntry,
    MoneySettings,
    MoneyTransaction,
    PlatformWallet,
    iso_utc,
    platform_wallets,
)

# KasPro's reference ids carry a Jakarta (WIB, UTC+7) millisecond timestamp.
_WIB = timezone(timedelta(hours=7))
RESPONSE_ID_PREFIX = "OLSFQ"


@dataclass
class Customer:
    """A registered KasPro subscriber, keyed by its local `08…` number."""

    mobile_number: str
    first_name: str
    middle_name: str
    last_name: str
    email: str
    address: str
    city: str
    province: str
    country: str
    postal_code: str
    register_request_id: str
    register_response_id: str
    registered_at: float
    account_type: str = "Basic"
    account_status: str = "Active"
    customer_type: str = "Subscriber"
    kyc_status: str = "Unverified"
    balance: int = 0
    pocket_id: str = "2"
    id_card_number: str | None = None

    @property
    def full_name(self) -> str:
        names = (self.first_name, self.middle_name, self.last_name)
        return " ".join(name for name in names if name)

    def to_json(self) -> dict[str, Any]:
        """The sandbox's own view of the customer (control endpoints), not a KasPro shape."""
        return {
            "mobileNumber": self.mobile_number,
            "firstName": self.first_name,
            "middleName": self.middle_name,
            "lastName": self.last_name,
            "fullName": self.full_name,
            "email": self.email,
            "address": self.address,
            "city": self.city,
            "province": self.province,
            "country": self.country,
            "postalCode": self.postal_code,
            "accountType": self.account_type,
            "accountStatus": self.account_status,
            "customerType": self.customer_type,
            "kycStatus": self.kyc_status,
            "balance": self.balance,
            "pocketId": self.pocket_id,
            "idCardNumber": self.id_card_number,
            "registerRequestId": self.register_request_id,
            "registerResponseId": self.register_response_id,
            "registeredAt": iso_utc(self.registered_at),
        }


@dataclass
class IssuedOtp:
    """The one live OTP of a number and the message that 'delivered' it."""

    mobile_number: str
    code: str
    expires_at: float
    message: str
    channel: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mobileNumber": self.mobile_number,
            "otp": self.code,
            "message": self.message,
            "channel": self.channel,
            "expiresAt": iso_utc(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the gateway answered; the mobile number is already masked."""

    time: float
    method: str
    path: str
    mobile_number: str | None
    request_id: str | None
    code: int | None
    http_status: int | None  # None: no answer (the connection was reset)
    fault: str | None = None
    fault_rule: int | None = None
    script_step: str | None = None
    callback_fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": iso_utc(self.time),
            "method": self.method,
            "path": self.path,
            "mobileNumber": self.mobile_number,
            "requestId": self.request_id,
            "code": self.code,
            "httpStatus": self.http_status,
            "fault": self.fault,
            "faultRule": self.fault_rule,
            "scriptStep": self.script_step,
            "callbackFault": self.callback_fault,
        }


Holder = Customer | PlatformWallet


@dataclass(eq=False)
class SandboxState:
    """The gateway's memory. `seed` makes OTPs reproducible, and faults unless the config
    has a `fault_seed`; `config` gives the platform wallets, the balance caps, the starting
    money settings and the fault rules armed at the start.
    """

    seed: int | None = None
    config: SandboxConfig = field(default_factory=SandboxConfig)
    customers: dict[str, Customer] = field(default_factory=dict)
    otps: dict[str, IssuedOtp] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    ocr_overrides: dict[str, str] = field(default_factory=dict)
    faults: FaultTable = field(init=False)
    requests: deque[LoggedRequest] = field(init=False)
    requests_dropped: int = field(default=0, init=False)
    transactions: dict[str, MoneyTransaction] = field(default_factory=dict)
    reff_ids: dict[str, str] = field(default_factory=dict)
    journal: list[JournalEntry] = field(default_factory=list)
    callbacks: list[CallbackAttempt] = field(default_factory=list)
    wallets: dict[str, PlatformWallet] = field(init=False)
    settings: MoneySettings = field(init=False)
    tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    rng: random.Random = field(init=False)
    _last_response_ms: int = field(default=0, init=False)
    _topups: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.requests = deque(maxlen=self.config.request_log_size)
        self.rng = random.Random(self.seed)
        self.wallets = platform_wallets(self.config)
        self.settings = MoneySettings.from_config(self.config)
        fault_seed = self.config.fault_seed if self.config.fault_seed is not None else self.seed
        self.faults = FaultTable(seed=fault_seed, rules=self.config.faults)

    def reset(self) -> None:
        """Forget everything, as a freshly started sandbox with the same seed and config
        (the config's fault rules are armed again, with fresh counters and generator).

        Pending completions and callback deliveries are cancelled (not awaited: the tasks
        end at their next step; `aclose()` awaits them). The money settings go back to the
        config's, except the callback URL: it is wiring, not state (an embedded sandbox is
        told its partner's receiver once, at start-up), so it stays as it is.
        """
        callback_url = self.settings.callback_url
        self.cancel_tasks()
        self.customers.clear()
        self.otps.clear()
        self.tokens.clear()
        self.ocr_overrides.clear()
        self.faults.reset()
        self.clear_requests()
        self.transactions.clear()
        self.reff_ids.clear()
        self.journal.clear()
        self.callbacks.clear()
        self.wallets = platform_wallets(self.config)
        self.settings = MoneySettings.from_config(self.config)
        self.settings.callback_url = callback_url
        self.rng = random.Random(self.seed)
        self._last_response_ms = 0
        self._topups = 0

    def log_request(self, entry: LoggedRequest) -> None:
        """Keep `entry`; past `config.request_log_size` entries the oldest one goes."""
        if len(self.requests) == self.requests.maxlen:
            self.requests_dropped += 1
        self.requests.append(entry)

    def clear_requests(self) -> int:
        """Empty the request log (and its count of dropped entries); how many it held."""
        held = len(self.requests)
        self.requests.clear()
        self.requests_dropped = 0
        return held

    @property
    def callback_url(self) -> str | None:
        """Where callbacks go (None: nowhere); the same as `settings.callback_url`."""
        return self.settings.callback_url

    @callback_url.setter
    def callback_url(self, url: str | None) -> None:
        self.settings.callback_url = url

    # tokens, OTPs, ids

    def issue_token(self, now: float, ttl_seconds: int) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now + ttl_seconds
        return token

    def token_is_live(self, token: str, now: float) -> bool:
        expires_at = self.tokens.get(token)
        return expires_at is not None and now < expires_at

    def new_otp_code(self) -> str:
        return f"{self.rng.randrange(1_000_000):06d}"

    def new_response_id(self, now: float) -> str:
        """`OLSFQ` + WIB timestamp to the millisecond, unique within this sandbox."""
        return self.new_reference(now)[0]

    def new_reference(self, now: float) -> tuple[str, int]:
        """A response id and its millisecond timestamp (the numeric `reference` of P2P)."""
        millis = max(int(now * 1000), self._last_response_ms + 1)
        self._last_response_ms = millis
        stamp = datetime.fromtimestamp(millis // 1000, tz=_WIB)
        return f"{RESPONSE_ID_PREFIX}{stamp:%Y%m%d%H%M%S}{millis % 1000:03d}", millis

    def new_topup_request_id(self) -> str:
        """KasPro's own requestId for a top-up: `TOPUP` + 15 digits.

        20 characters, so it never collides with a partner's 16-character requestId.
        """
        self._topups += 1
        return f"TOPUP{self._topups:015d}"

    # wallets and the journal

    def holder(self, account: str) -> Holder | None:
        """The balance behind a subscriber `08…` number or a platform account number."""
        customer = self.customers.get(account)
        return customer if customer is not None else self.wallets.get(account)

    def balance_cap(self, holder: Holder) -> int | None:
        """The most a wallet may hold: Basic/Premium subscribers are capped, platforms are not."""
        if isinstance(holder, PlatformWallet):
            return None
        if holder.account_type.lower() == "premium":
            return self.config.premium_balance_cap
        return self.config.basic_balance_cap

    def would_break_cap(self, holder: Holder, credit: int) -> bool:
        cap = self.balance_cap(holder)
        return cap is not None and holder.balance + credit > cap

    def add_transaction(self, transaction: MoneyTransaction) -> None:
        self.transactions[transaction.request_id] = transaction
        self.reff_ids[transaction.reff_id] = transaction.request_id

    def transaction_by_reff_id(self, reff_id: str) -> MoneyTransaction | None:
        request_id = self.reff_ids.get(reff_id)
        return self.transactions.get(request_id) if request_id is not None else None

    def move(
        self,
        *,
        now: float,
        request_id: str,
        kind: str,
        source: str,
        destination: str,
        amount: int,
        fee: int = 0,
    ) -> JournalEntry:
        """Move `amount + fee` and journal it; the caller has checked balances and caps.

        `source`/`destination` are `08…` numbers, platform account numbers or `external:…`
        (no balance: external parties are only counted, from the journal).
        """
        total = amount + fee
        for account, change in ((source, -total), (destination, total)):
            if account.startswith(EXTERNAL_PREFIX):
                continue
            holder = self.holder(account)
            if holder is None:
                raise KeyError(account)
            holder.balance += change
        entry = JournalEntry(
            seq=len(self.journal) + 1,
            time=now,
            request_id=request_id,
            type=kind,
            source=source,
            destination=destination,
            amount=amount,
            fee=fee,
        )
        self.journal.append(entry)
        return entry

    def external_flows(self) -> dict[str, dict[str, int]]:
        """Per external party, what went `out` to it and came `in` from it (amount + fee)."""
        flows = {name: {"in": 0, "out": 0} for name in EXTERNAL_PARTIES}
        for entry in self.journal:
            for account, direction in ((entry.destination, "out"), (entry.source, "in")):
                name = account.removeprefix(EXTERNAL_PREFIX)
                if account.startswith(EXTERNAL_PREFIX) and name in flows:
                    flows[name][direction] += entry.total
        return flows

    def balances(self) -> dict[str, Any]:
        """`GET /_sandbox/balances`: subscribers, platform wallets, external totals."""
        flows = self.external_flows()
        external = {name: flow["out"] - flow["in"] for name, flow in flows.items()}
        external["va"] = flows["va"]["in"] - flows["va"]["out"]
        return {
            "subscribers": {number: c.balance for number, c in self.customers.items()},
            "platform": {wallet.name: wallet.balance for wallet in self.wallets.values()},
            "external": external,
            "externalFlows": flows,
        }

    # background tasks

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `coroutine` in the background; reset() and aclose() cancel it."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for transaction in self.transactions.values():
            transaction.completion = None

    async def aclose(self) -> None:
        """Cancel every background task and wait until they have all ended."""
        while self.tasks:
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.tasks.difference_update(pending)

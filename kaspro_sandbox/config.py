"""The sandbox's settings: credentials, lifetimes, clock skew, seed, clock, wallets and money."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEV_CLIENT_ID = "wallet-dev"
DEV_CLIENT_SECRET = "wallet-dev-secret"
DEV_HMAC_KEY = "wallet-dev-key"
DEV_HMAC_SECRET = "wallet-dev-hmac-secret"
DEV_CALLBACK_SECRET = "wallet-dev-callback-secret"

ESCROW_ACCOUNT = "888000000000001"
MERCHANT_ACCOUNT = "888000000000002"
CORPORATE_ACCOUNT = "888000000000003"

# The waits between a callback's tries until one is answered 2xx: a provider's schedule,
# backing off from seconds to hours and giving up after about a day: 10 s, 30 s, 1 min,
# 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h (12 tries, the last 23 h 52 min after the
# first; docs/kaspro.md § Callbacks says why we assume it).
REALISTIC_CALLBACK_RETRY_DELAYS: tuple[float, ...] = (
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    7200,
    14_400,
    28_800,
    28_800,
)
# The same shape in seconds, for tests and chaos runs (5 tries within 3 s).
QUICK_CALLBACK_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.4, 0.8, 1.6)


def service_environment(base_url: str) -> dict[str, str]:
    """The wallet service's WALLET_KASPRO_* variables for a standalone sandbox at
    ``base_url`` with the development credentials and wallets above."""
    return {
        "WALLET_KASPRO_BASE_URL": base_url,
        "WALLET_KASPRO_CLIENT_ID": DEV_CLIENT_ID,
        "WALLET_KASPRO_CLIENT_SECRET": DEV_CLIENT_SECRET,
        "WALLET_KASPRO_HMAC_KEY": DEV_HMAC_KEY,
        "WALLET_KASPRO_HMAC_SECRET": DEV_HMAC_SECRET,
        "WALLET_KASPRO_CALLBACK_SECRET": DEV_CALLBACK_SECRET,
        "WALLET_KASPRO_ESCROW_ACCOUNT": ESCROW_ACCOUNT,
        "WALLET_KASPRO_MERCHANT_ACCOUNT": MERCHANT_ACCOUNT,
        "WALLET_KASPRO_CORPORATE_ACCOUNT": CORPORATE_ACCOUNT,
    }


@dataclass(frozen=True)
class SandboxConfig:
    """How the fake gateway authenticates partners, how long what it issues lives, and money.

    `clock` returns Unix seconds; every expiry, the Date check, the request log, the journal
    and the callback timestamps use it, so a test can move time by passing its own clock.
    `async_delay_seconds`, `auto_complete`, `cash_out_fee` and `callback_url` are only the
    starting values: `POST /_sandbox/settings` and `/_sandbox/callback-url` change them at
    runtime, and a reset brings these back. `faults` are fault rules in their JSON form
    (docs/sandbox.md § Faults), armed at the start and again on every reset; their draws
    use `fault_seed`, or `seed` when that is None.
    """

    client_id: str = DEV_CLIENT_ID
    client_secret: str = DEV_CLIENT_SECRET
    hmac_key: str = DEV_HMAC_KEY
    hmac_secret: str = DEV_HMAC_SECRET
    token_ttl_seconds: int = 3600
    otp_ttl_seconds: int = 300
    date_skew_seconds: int = 300
    seed: int | None = None
    clock: Callable[[], float] = field(default=time.time)
    # Platform wallets (KasPro accounts known by number) and the e-money balance caps.
    escrow_account: str = ESCROW_ACCOUNT
    merchant_account: str = MERCHANT_ACCOUNT
    corporate_account: str = CORPORATE_ACCOUNT
    basic_balance_cap: int = 2_000_000
    premium_balance_cap: int = 20_000_000
    # Asynchronous transfers (bank-transfer, qris-issuer).
    cash_out_fee: int = 0
    async_delay_seconds: float = 0.5
    auto_complete: bool = True
    # Callbacks of final statuses and top-ups.
    callback_url: str | None = None
    callback_secret: str = DEV_CALLBACK_SECRET
    # The waits between tries (one fewer than the tries).
    callback_retry_delays: tuple[float, ...] = REALISTIC_CALLBACK_RETRY_DELAYS
    callback_timeout_seconds: float = 5.0
    # Fault injection.
    faults: tuple[Mapping[str, Any], ...] = ()
    fault_seed: int | None = None
    # The request log keeps the newest this many entries (0: none); older ones are
    # counted as dropped. A long-running sandbox would otherwise grow without end.
    request_log_size: int = 100_000

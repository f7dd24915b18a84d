"""The sandbox's settings: partner credentials, lifetimes, clock skew, randomness seed and clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEV_CLIENT_ID = "wallet-dev"
DEV_CLIENT_SECRET = "wallet-dev-secret"
DEV_HMAC_KEY = "wallet-dev-key"
DEV_HMAC_SECRET = "wallet-dev-hmac-secret"


@dataclass(frozen=True)
class SandboxConfig:
    """How the fake gateway authenticates partners and how long what it issues lives.

    `clock` returns Unix seconds; every expiry, the Date check and the request log use it,
    so a test can move time by passing its own clock.
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

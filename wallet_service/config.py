"""Every setting of the service, read from WALLET_* environment variables.

The README's configuration table lists the same variables; keep them in step.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from wallet_service.domain.otp import OtpLimits
from wallet_service.kaspro import KasProSettings

EMBEDDED = "embedded"

# Development credentials shared with the in-process sandbox (kaspro_sandbox defaults).
_DEV_KASPRO = {
    "client_id": "wallet-dev",
    "client_secret": "wallet-dev-secret",
    "hmac_key": "wallet-dev-key",
    "hmac_secret": "wallet-dev-hmac-secret",
}
DEV_TOKEN = "dev-token"

ROLES = frozenset({"app", "dispatch", "pricing", "admin"})


class ConfigError(ValueError):
    """A WALLET_* variable is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Config:
    grpc_listen: str = "127.0.0.1:50051"
    db_path: str = "var/wallet.db"
    kaspro_base_url: str = EMBEDDED
    sandbox_listen: str = "127.0.0.1:8090"
    kaspro_client_id: str = _DEV_KASPRO["client_id"]
    kaspro_client_secret: str = _DEV_KASPRO["client_secret"]
    kaspro_hmac_key: str = _DEV_KASPRO["hmac_key"]
    kaspro_hmac_secret: str = _DEV_KASPRO["hmac_secret"]
    kaspro_timeout_seconds: float = 10.0
    kaspro_ekyc_timeout_seconds: float = 30.0
    callers: Mapping[str, Caller] = field(default_factory=dict)
    otp: OtpLimits = field(default_factory=OtpLimits)
    idempotency_ttl_hours: float = 72.0
    idempotency_lease_seconds: float = 120.0
    max_image_bytes: int = 5 * 1024 * 1024
    max_concurrent_rpcs: int = 1000
    grace_period_seconds: float = 10.0
    log_level: str = "INFO"

    @property
    def embedded_sandbox(self) -> bool:
        return self.kaspro_base_url == EMBEDDED

    @property
    def max_message_bytes(self) -> int:
        # Room for three images at the cap, base64 growth not included (gRPC sends
        # raw bytes), plus the rest of the message; anything above the per-image cap
        # still arrives and is refused with INVALID_ARGUMENT.
        return 4 * self.max_image_bytes + 1024 * 1024

    def kaspro_settings(self, base_url: str) -> KasProSettings:
        return KasProSettings(
            base_url=base_url,
            client_id=self.kaspro_client_id,
            client_secret=self.kaspro_client_secret,
            hmac_key=self.kaspro_hmac_key,
            hmac_secret=self.kaspro_hmac_secret,
            timeout_seconds=self.kaspro_timeout_seconds,
            ekyc_timeout_seconds=self.kaspro_ekyc_timeout_seconds,
        )


def parse_callers(text: str) -> dict[str, Caller]:
    """Parse ``name:role+role:token;name:role:token`` into token → caller."""
    callers: dict[str, Caller] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        parts = entry.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ConfigError("WALLET_CALLER_TOKENS entries must be name:roles:token")
        name, roles_text, token = parts
        roles = frozenset(roles_text.split("+"))
        unknown = roles - ROLES
        if unknown:
            raise ConfigError(f"WALLET_CALLER_TOKENS: unknown role(s) {sorted(unknown)} for {name}")
        if len(token) < 8:
            raise ConfigError(f"WALLET_CALLER_TOKENS: token of {name} must be 8+ characters")
        if token in callers:
            raise ConfigError(f"WALLET_CALLER_TOKENS: a token is used twice ({name})")
        callers[token] = Caller(name, roles)
    return callers


def log_level(text: str) -> str:
    level = text.upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(f"WALLET_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {text!r}")
    return level


def load(env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from the environment (``os.environ`` by default)."""
    env = os.environ if env is None else env

    def text(name: str, default: str) -> str:
        return env.get(name, "").strip() or default

    def number(name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        return value

    def integer(name: str, default: int, *, minimum: int = 0) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
            raise ConfigError(f"{name} must be an integer of at least {minimum}, got {raw!r}")
        return int(raw)

    base_url = text("WALLET_KASPRO_BASE_URL", EMBEDDED).rstrip("/")
    embedded = base_url == EMBEDDED
    credentials = {}
    for key, dev_value in _DEV_KASPRO.items():
        variable = f"WALLET_KASPRO_{key.upper()}"
        value = env.get(variable, "").strip()
        if not value and not embedded:
            raise ConfigError(f"{variable} is required when WALLET_KASPRO_BASE_URL is set")
        credentials[key] = value or dev_value

    callers = parse_callers(env.get("WALLET_CALLER_TOKENS", ""))
    if not callers and embedded:
        callers = {DEV_TOKEN: Caller("dev", frozenset({"admin"}))}
    if not callers:
        raise ConfigError("WALLET_CALLER_TOKENS is required when WALLET_KASPRO_BASE_URL is set")

    return Config(
        grpc_listen=text("WALLET_GRPC_LISTEN", "127.0.0.1:50051"),
        db_path=text("WALLET_DB_PATH", "var/wallet.db"),
        kaspro_base_url=base_url,
        sandbox_listen=text("WALLET_SANDBOX_LISTEN", "127.0.0.1:8090"),
        kaspro_client_id=credentials["client_id"],
        kaspro_client_secret=credentials["client_secret"],
        kaspro_hmac_key=credentials["hmac_key"],
        kaspro_hmac_secret=credentials["hmac_secret"],
        kaspro_timeout_seconds=number("WALLET_KASPRO_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        kaspro_ekyc_timeout_seconds=number("WALLET_KASPRO_EKYC_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        callers=callers,
        otp=OtpLimits(
            resend_cooldown_seconds=number("WALLET_OTP_RESEND_COOLDOWN_SECONDS", 60.0),
            hourly_cap=integer("WALLET_OTP_HOURLY_CAP", 5, minimum=1),
            max_failed_attempts=integer("WALLET_OTP_MAX_FAILED_ATTEMPTS", 5, minimum=1),
            lock_seconds=number("WALLET_OTP_LOCK_SECONDS", 1800.0),
        ),
        idempotency_ttl_hours=number("WALLET_IDEMPOTENCY_TTL_HOURS", 72.0, minimum=72.0),
        max_image_bytes=integer("WALLET_MAX_IMAGE_BYTES", 5 * 1024 * 1024, minimum=1024),
        max_concurrent_rpcs=integer("WALLET_MAX_CONCURRENT_RPCS", 1000, minimum=1),
        grace_period_seconds=number("WALLET_GRACE_PERIOD_SECONDS", 10.0),
        log_level=log_level(text("WALLET_LOG_LEVEL", "INFO")),
    )

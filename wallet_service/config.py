"""Every setting of the service, read from WALLET_* environment variables.

The README's configuration table lists the same variables; keep them in step.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from wallet_service.domain.funding import (
    BANKS,
    DEFAULT_DRIVER_RETAIL_PREFIXES,
    DEFAULT_DRIVER_VA_PREFIXES,
    DEFAULT_RETAIL_PREFIXES,
    DEFAULT_VA_PREFIXES,
    OUTLETS,
    RetailPrefix,
    VaPrefix,
)
from wallet_service.domain.money import Limits
from wallet_service.domain.otp import OtpLimits
from wallet_service.kaspro import KasProSettings
from wallet_service.kaspro.client import KASPRO_HTTP_CLIENTS

EMBEDDED = "embedded"

# Development credentials shared with the in-process sandbox (kaspro_sandbox defaults).
_DEV_KASPRO = {
    "client_id": "wallet-dev",
    "client_secret": "wallet-dev-secret",
    "hmac_key": "wallet-dev-key",
    "hmac_secret": "wallet-dev-hmac-secret",
    "callback_secret": "wallet-dev-callback-secret",
    "escrow_account": "888000000000001",
    "merchant_account": "888000000000002",
    "corporate_account": "888000000000003",
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
class TlsSettings:
    """TLS of the gRPC port: the server's certificate and, for mutual TLS, the client CA.

    With ``client_ca`` every client must present a certificate signed by it; a
    certificate whose subject CN is a key of ``client_callers`` authenticates as that
    caller without a bearer token (docs/operations.md, "TLS").
    """

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None
    client_callers: Mapping[str, Caller] = field(default_factory=dict)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


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
    kaspro_callback_secret: str = _DEV_KASPRO["callback_secret"]
    kaspro_callback_secret_previous: str = ""
    kaspro_escrow_account: str = _DEV_KASPRO["escrow_account"]
    kaspro_merchant_account: str = _DEV_KASPRO["merchant_account"]
    kaspro_corporate_account: str = _DEV_KASPRO["corporate_account"]
    kaspro_timeout_seconds: float = 10.0
    kaspro_ekyc_timeout_seconds: float = 30.0
    kaspro_max_connections: int = 1024
    kaspro_http_client: str = "builtin"
    http_listen: str = "127.0.0.1:8081"
    # The HTTP port's bounds and what unverified callbacks may cost (docs/operations.md,
    # "The callback port").
    http_max_connections: int = 1000
    http_head_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 10.0
    http_keep_alive_seconds: int = 5
    unverified_callback_sample: int = 100
    unverified_top_up_checks: int = 100
    unverified_inquiry_period_seconds: float = 60.0
    limits: Limits = field(default_factory=Limits)
    va_prefixes: tuple[VaPrefix, ...] = DEFAULT_VA_PREFIXES
    driver_va_prefixes: tuple[VaPrefix, ...] = DEFAULT_DRIVER_VA_PREFIXES
    retail_prefixes: tuple[RetailPrefix, ...] = DEFAULT_RETAIL_PREFIXES
    driver_retail_prefixes: tuple[RetailPrefix, ...] = DEFAULT_DRIVER_RETAIL_PREFIXES
    cash_out_banks: Mapping[str, str] = field(default_factory=lambda: dict(BANKS))
    reconcile_interval_seconds: float = 1.0
    reconcile_grace_seconds: float = 30.0
    reconcile_overdue_seconds: float = 3600.0
    callers: Mapping[str, Caller] = field(default_factory=dict)
    otp: OtpLimits = field(default_factory=OtpLimits)
    idempotency_ttl_hours: float = 72.0
    max_image_bytes: int = 5 * 1024 * 1024
    max_concurrent_rpcs: int = 1000
    max_watch_streams: int = 100
    max_watch_streams_per_caller: int = 20
    min_money_deadline_seconds: float = 1.0
    grace_period_seconds: float = 10.0
    log_level: str = "INFO"
    tls: TlsSettings | None = None

    @property
    def embedded_sandbox(self) -> bool:
        return self.kaspro_base_url == EMBEDDED

    @property
    def max_message_bytes(self) -> int:
        # The largest valid request: UpgradeKyc's three images at the cap (raw bytes,
        # no base64) plus its request_id, number and framing (under 200 bytes). gRPC
        # refuses a larger one from its length prefix, before buffering it
        # (docs/decisions/0003-grpc-receive-limit.md).
        return 3 * self.max_image_bytes + 64 * 1024

    def kaspro_settings(self, base_url: str) -> KasProSettings:
        return KasProSettings(
            base_url=base_url,
            client_id=self.kaspro_client_id,
            client_secret=self.kaspro_client_secret,
            hmac_key=self.kaspro_hmac_key,
            hmac_secret=self.kaspro_hmac_secret,
            timeout_seconds=self.kaspro_timeout_seconds,
            ekyc_timeout_seconds=self.kaspro_ekyc_timeout_seconds,
            max_connections=self.kaspro_max_connections,
            http_client=self.kaspro_http_client,
        )


def parse_callers(text: str) -> dict[str, Caller]:
    """Parse ``name:role+role:token;name:role:token`` into token → caller.

    A name may have several tokens (a rotation), all with the same roles: idempotency
    keys are scoped by name, so one name with two sets of roles would be one caller
    whose rights depend on the token it happens to send.
    """
    callers: dict[str, Caller] = {}
    roles_of: dict[str, frozenset[str]] = {}
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
        known = roles_of.setdefault(name, roles)
        if known != roles:
            raise ConfigError(
                f"WALLET_CALLER_TOKENS: caller {name} is given twice with different roles "
                f"({'+'.join(sorted(known))} and {'+'.join(sorted(roles))}); its tokens "
                "must all carry the same roles"
            )
        callers[token] = Caller(name, roles)
    return callers


def parse_certificate_callers(text: str) -> dict[str, Caller]:
    """Parse ``name:role+role:common-name;…`` into client-certificate subject CN → caller."""
    callers: dict[str, Caller] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        parts = [part.strip() for part in entry.split(":", 2)]
        if len(parts) != 3 or not all(parts):
            raise ConfigError("WALLET_TLS_CLIENT_CALLERS entries must be name:roles:common-name")
        name, roles_text, common_name = parts
        roles = frozenset(roles_text.split("+"))
        unknown = roles - ROLES
        if unknown:
            raise ConfigError(
                f"WALLET_TLS_CLIENT_CALLERS: unknown role(s) {sorted(unknown)} for {name}"
            )
        if common_name in callers:
            raise ConfigError(
                f"WALLET_TLS_CLIENT_CALLERS: common name {common_name!r} is used twice"
            )
        callers[common_name] = Caller(name, roles)
    return callers


def _one_role_set_per_name(
    tokens: Mapping[str, Caller], certificates: Mapping[str, Caller]
) -> None:
    """A caller name (the scope of its idempotency keys) has one set of roles, whether it
    authenticates by token or by certificate."""
    roles: dict[str, frozenset[str]] = {c.name: c.roles for c in tokens.values()}
    for caller in certificates.values():
        known = roles.setdefault(caller.name, caller.roles)
        if known != caller.roles:
            raise ConfigError(
                f"WALLET_TLS_CLIENT_CALLERS: caller {caller.name} has roles "
                f"{'+'.join(sorted(caller.roles))} here but {'+'.join(sorted(known))} "
                "elsewhere (WALLET_CALLER_TOKENS or an earlier entry)"
            )


def _read_pem(env: Mapping[str, str], name: str, kind: str) -> tuple[str, bytes] | None:
    """The path a variable names and the PEM text of the file; None when it is unset."""
    path = env.get(name, "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            content = file.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in content:
        raise ConfigError(f"{name}: {path} is not a PEM file (expected {kind})")
    return path, content


def _refuse_encrypted_key() -> str:
    raise ConfigError("WALLET_TLS_KEY_FILE: the private key is encrypted; gRPC needs a plain one")


def _tls(env: Mapping[str, str], token_callers: Mapping[str, Caller]) -> TlsSettings | None:
    """The TLS variables: the gRPC port's certificate, key, client CA and certificate callers."""
    certificate = _read_pem(env, "WALLET_TLS_CERT_FILE", "a certificate chain")
    key = _read_pem(env, "WALLET_TLS_KEY_FILE", "a private key")
    client_ca = _read_pem(env, "WALLET_TLS_CLIENT_CA_FILE", "CA certificates")
    callers = parse_certificate_callers(env.get("WALLET_TLS_CLIENT_CALLERS", ""))
    if certificate is None or key is None:
        if certificate is not None or key is not None:
            raise ConfigError("WALLET_TLS_CERT_FILE and WALLET_TLS_KEY_FILE go together: set both")
        if client_ca is not None:
            raise ConfigError(
                "WALLET_TLS_CLIENT_CA_FILE needs TLS: set WALLET_TLS_CERT_FILE and "
                "WALLET_TLS_KEY_FILE too"
            )
        if callers:
            raise ConfigError(
                "WALLET_TLS_CLIENT_CALLERS needs mutual TLS: set WALLET_TLS_CERT_FILE, "
                "WALLET_TLS_KEY_FILE and WALLET_TLS_CLIENT_CA_FILE"
            )
        return None
    if callers and client_ca is None:
        raise ConfigError(
            "WALLET_TLS_CLIENT_CALLERS needs WALLET_TLS_CLIENT_CA_FILE: without it client "
            "certificates are not asked for"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate[0], key[0], password=_refuse_encrypted_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            "WALLET_TLS_CERT_FILE / WALLET_TLS_KEY_FILE: not a usable certificate and "
            f"matching unencrypted private key ({getattr(exc, 'reason', None) or exc})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cadata=client_ca[1].decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"WALLET_TLS_CLIENT_CA_FILE: {client_ca[0]} holds no usable CA certificate "
                f"({getattr(exc, 'reason', None) or exc})"
            ) from None
    _one_role_set_per_name(token_callers, callers)
    return TlsSettings(
        certificate_chain=certificate[1],
        private_key=key[1],
        client_ca=None if client_ca is None else client_ca[1],
        client_callers=callers,
    )


def log_level(text: str) -> str:
    level = text.upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(f"WALLET_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {text!r}")
    return level


def kaspro_http_client(text: str) -> str:
    client = text.lower()
    if client not in KASPRO_HTTP_CLIENTS:
        raise ConfigError(f"WALLET_KASPRO_HTTP_CLIENT must be builtin or aiohttp, got {text!r}")
    return client


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

    def amount(name: str, default: int) -> int:
        return integer(name, default, minimum=1)

    va_prefixes = _va_prefixes(env, "WALLET_TOPUP_VA_PREFIXES", DEFAULT_VA_PREFIXES)
    driver_va = _va_prefixes(env, "WALLET_DRIVER_VA_PREFIXES", DEFAULT_DRIVER_VA_PREFIXES)
    retail_min = amount("WALLET_RETAIL_MIN_IDR", 10_000)
    retail_max = amount("WALLET_RETAIL_MAX_IDR", 5_000_000)
    retail = _retail_prefixes(
        env, "WALLET_TOPUP_RETAIL_PREFIXES", DEFAULT_RETAIL_PREFIXES, retail_min, retail_max
    )
    driver_retail = _retail_prefixes(
        env,
        "WALLET_DRIVER_RETAIL_PREFIXES",
        DEFAULT_DRIVER_RETAIL_PREFIXES,
        retail_min,
        retail_max,
    )
    _distinct_prefixes([p.prefix for p in va_prefixes], [p.prefix for p in driver_va], "VA")
    _distinct_prefixes([p.prefix for p in retail], [p.prefix for p in driver_retail], "retail")
    limits = Limits(
        basic_balance_cap_idr=amount("WALLET_BASIC_BALANCE_CAP_IDR", 2_000_000),
        premium_balance_cap_idr=amount("WALLET_PREMIUM_BALANCE_CAP_IDR", 20_000_000),
        monthly_volume_cap_idr=amount("WALLET_MONTHLY_VOLUME_CAP_IDR", 40_000_000),
        tip_cap_idr=amount("WALLET_TIP_CAP_IDR", 100_000),
        min_cash_out_idr=amount("WALLET_MIN_CASH_OUT_IDR", 10_000),
        max_cash_out_idr=amount("WALLET_MAX_CASH_OUT_IDR", 10_000_000),
        hold_lifetime_seconds=number("WALLET_HOLD_LIFETIME_SECONDS", 86400.0, minimum=1.0),
    )

    callers = parse_callers(env.get("WALLET_CALLER_TOKENS", ""))
    tls = _tls(env, callers)
    certificate_callers = tls.client_callers if tls is not None else {}
    if not callers and not certificate_callers and embedded:
        callers = {DEV_TOKEN: Caller("dev", frozenset({"admin"}))}
    if not callers and not certificate_callers:
        raise ConfigError(
            "WALLET_CALLER_TOKENS (or WALLET_TLS_CLIENT_CALLERS) is required when "
            "WALLET_KASPRO_BASE_URL is set"
        )

    return Config(
        grpc_listen=text("WALLET_GRPC_LISTEN", "127.0.0.1:50051"),
        db_path=text("WALLET_DB_PATH", "var/wallet.db"),
        kaspro_base_url=base_url,
        sandbox_listen=text("WALLET_SANDBOX_LISTEN", "127.0.0.1:8090"),
        kaspro_client_id=credentials["client_id"],
        kaspro_client_secret=credentials["client_secret"],
        kaspro_hmac_key=credentials["hmac_key"],
        kaspro_hmac_secret=credentials["hmac_secret"],
        kaspro_callback_secret=credentials["callback_secret"],
        kaspro_callback_secret_previous=env.get(
            "WALLET_KASPRO_CALLBACK_SECRET_PREVIOUS", ""
        ).strip(),
        kaspro_escrow_account=credentials["escrow_account"],
        kaspro_merchant_account=credentials["merchant_account"],
        kaspro_corporate_account=credentials["corporate_account"],
        http_listen=text("WALLET_HTTP_LISTEN", "127.0.0.1:8081"),
        http_max_connections=integer("WALLET_HTTP_MAX_CONNECTIONS", 1000, minimum=1),
        http_head_timeout_seconds=number("WALLET_HTTP_HEAD_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        http_body_timeout_seconds=number("WALLET_HTTP_BODY_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        http_keep_alive_seconds=integer("WALLET_HTTP_KEEP_ALIVE_SECONDS", 5, minimum=1),
        unverified_callback_sample=integer("WALLET_UNVERIFIED_CALLBACK_SAMPLE", 100),
        unverified_top_up_checks=integer("WALLET_UNVERIFIED_TOP_UP_CHECKS", 100, minimum=1),
        unverified_inquiry_period_seconds=number(
            "WALLET_UNVERIFIED_INQUIRY_PERIOD_SECONDS", 60.0, minimum=1.0
        ),
        limits=limits,
        va_prefixes=va_prefixes,
        driver_va_prefixes=driver_va,
        retail_prefixes=retail,
        driver_retail_prefixes=driver_retail,
        cash_out_banks=_banks(env),
        reconcile_interval_seconds=number("WALLET_RECONCILE_INTERVAL_SECONDS", 1.0, minimum=0.01),
        reconcile_grace_seconds=number("WALLET_RECONCILE_GRACE_SECONDS", 30.0),
        reconcile_overdue_seconds=number("WALLET_RECONCILE_OVERDUE_SECONDS", 3600.0),
        kaspro_timeout_seconds=number("WALLET_KASPRO_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        kaspro_ekyc_timeout_seconds=number("WALLET_KASPRO_EKYC_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        kaspro_max_connections=integer("WALLET_KASPRO_MAX_CONNECTIONS", 1024, minimum=1),
        kaspro_http_client=kaspro_http_client(text("WALLET_KASPRO_HTTP_CLIENT", "builtin")),
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
        max_watch_streams=integer("WALLET_MAX_WATCH_STREAMS", 100, minimum=1),
        max_watch_streams_per_caller=integer("WALLET_MAX_WATCH_STREAMS_PER_CALLER", 20, minimum=1),
        min_money_deadline_seconds=number("WALLET_MIN_MONEY_DEADLINE_SECONDS", 1.0),
        grace_period_seconds=number("WALLET_GRACE_PERIOD_SECONDS", 10.0),
        log_level=log_level(text("WALLET_LOG_LEVEL", "INFO")),
        tls=tls,
    )


def _va_prefixes(
    env: Mapping[str, str], name: str, default: tuple[VaPrefix, ...]
) -> tuple[VaPrefix, ...]:
    """``code:Bank name:prefix,…`` (bank code 3 digits, prefix digits)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    found = []
    for entry in raw.split(","):
        parts = [p.strip() for p in entry.split(":")]
        if (
            len(parts) != 3
            or not (parts[0].isascii() and parts[0].isdigit() and len(parts[0]) == 3)
            or not parts[1]
            or not (parts[2].isascii() and parts[2].isdigit())
        ):
            raise ConfigError(f"{name} entries must be code:Bank name:digits, got {entry!r}")
        found.append(VaPrefix(parts[0], parts[1], parts[2]))
    return tuple(found)


def _retail_prefixes(
    env: Mapping[str, str],
    name: str,
    default: tuple[RetailPrefix, ...],
    minimum: int,
    maximum: int,
) -> tuple[RetailPrefix, ...]:
    """``ALFAMART:prefix,INDOMARET:prefix``."""
    raw = env.get(name, "").strip()
    if minimum > maximum:
        raise ConfigError("WALLET_RETAIL_MIN_IDR must not exceed WALLET_RETAIL_MAX_IDR")
    if not raw:
        return tuple(RetailPrefix(p.outlet, p.prefix, minimum, maximum) for p in default)
    found = []
    for entry in raw.split(","):
        outlet, _, prefix = (part.strip() for part in entry.partition(":"))
        if outlet.upper() not in OUTLETS or not (prefix.isascii() and prefix.isdigit()):
            raise ConfigError(f"{name} entries must be ALFAMART|INDOMARET:digits, got {entry!r}")
        found.append(RetailPrefix(outlet.upper(), prefix, minimum, maximum))
    return tuple(found)


def _distinct_prefixes(users: list[str], drivers: list[str], kind: str) -> None:
    """A deposit is a driver's when its number starts with a driver prefix: the two sets
    must not overlap, or a passenger's top-up could be taken for a driver's deposit."""
    for user in users:
        for driver in drivers:
            if user.startswith(driver) or driver.startswith(user):
                raise ConfigError(f"{kind} prefixes {user} (top-up) and {driver} (driver) overlap")


def _banks(env: Mapping[str, str]) -> dict[str, str]:
    """``WALLET_CASH_OUT_BANKS``: comma-separated bank codes allowed for cash-out."""
    raw = env.get("WALLET_CASH_OUT_BANKS", "").strip()
    if not raw:
        return dict(BANKS)
    codes = [c.strip() for c in raw.split(",") if c.strip()]
    unknown = [c for c in codes if c not in BANKS]
    if unknown:
        raise ConfigError(f"WALLET_CASH_OUT_BANKS: unknown bank codes {unknown}")
    return {c: BANKS[c] for c in codes}

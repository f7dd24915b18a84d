"""Every setting of the service, read from WALLET_* environment variables.

Each setting is declared once, on its ``Config`` field: the variable, the default, what
it means and its lower bound. ``load`` reads them and the README's configuration table
is printed from them (``python -m wallet_service.config``; docs/decisions/0006).
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

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

EMBEDDED = "embedded"
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
class Setting:
    """One WALLET_* variable: what it means, and how its text becomes a value."""

    env: str
    meaning: str
    minimum: float = 0  # numbers only
    # Reads the (stripped, non-blank) text; a ValueError's message follows the name.
    parse: Callable[[str], Any] | None = None
    shown: str = ""  # the default as the README shows it, when not the value itself
    required: bool = False  # unless WALLET_KASPRO_BASE_URL is embedded


def setting(env: str, default: Any, meaning: str, **options: Any) -> Any:
    """A Config field read from ``env``; ``default`` when the variable is unset or blank."""
    declared = {"settings": (Setting(env, meaning, **options),)}
    if isinstance(default, Mapping):
        return field(default_factory=lambda: dict(default), metadata=declared)
    return field(default=default, metadata=declared)


def group(kind: type[Any], prefix: str, *settings: Setting) -> Any:
    """A Config field whose value's attributes are settings, by default a ``kind()``: the
    variable ``prefix + "NAME"`` sets the attribute ``name``."""
    return field(default_factory=kind, metadata={"settings": settings, "prefix": prefix})


def documented(default: Any, *settings: Setting) -> Any:
    """A Config field that ``load`` builds from several variables by its own rules."""
    return field(default=default, metadata={"documents": settings})


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"must be DEBUG, INFO, WARNING or ERROR, got {text!r}")
    return level


def _switch(text: str) -> bool:
    value = text.lower()
    if value not in ("true", "false"):
        raise ValueError(f"must be true or false, got {text!r}")
    return value == "true"


def _postgres_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql://user:password@host:port/database URL")
    return text


def _va_prefixes(text: str) -> tuple[VaPrefix, ...]:
    """``code:Bank name:prefix,…`` (bank code 3 digits, prefix digits)."""
    found = []
    for entry in text.split(","):
        parts = [p.strip() for p in entry.split(":")]
        if (
            len(parts) != 3
            or not (parts[0].isascii() and parts[0].isdigit() and len(parts[0]) == 3)
            or not parts[1]
            or not (parts[2].isascii() and parts[2].isdigit())
        ):
            raise ValueError(f"entries must be code:Bank name:digits, got {entry!r}")
        found.append(VaPrefix(parts[0], parts[1], parts[2]))
    return tuple(found)


def _retail_prefixes(text: str) -> tuple[RetailPrefix, ...]:
    """``ALFAMART:prefix,INDOMARET:prefix``; ``load`` sets the amounts."""
    found = []
    for entry in text.split(","):
        outlet, _, prefix = (part.strip() for part in entry.partition(":"))
        if outlet.upper() not in OUTLETS or not (prefix.isascii() and prefix.isdigit()):
            raise ValueError(f"entries must be ALFAMART|INDOMARET:digits, got {entry!r}")
        found.append(RetailPrefix(outlet.upper(), prefix))
    return tuple(found)


def _banks(text: str) -> dict[str, str]:
    """Comma-separated bank codes, each one of ``domain.funding.BANKS``."""
    codes = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in codes if c not in BANKS]
    if unknown:
        raise ValueError(f"has unknown bank codes {unknown}")
    return {c: BANKS[c] for c in codes}


def parse_callers(text: str) -> dict[str, Caller]:
    """Parse ``name:role+role:token;name:role:token`` into token → caller."""
    return _callers(text, "WALLET_CALLER_TOKENS", "token", shortest=8)


def parse_certificate_callers(
    text: str, tokens: Mapping[str, Caller] | None = None
) -> dict[str, Caller]:
    """Parse ``name:role+role:common-name;…`` into client-certificate subject CN → caller.

    A name also among the token callers ``tokens`` must carry the same roles there.
    """
    return _callers(text, "WALLET_TLS_CLIENT_CALLERS", "common-name", elsewhere=tokens)


def _callers(
    text: str,
    variable: str,
    key: str,
    *,
    shortest: int = 1,
    elsewhere: Mapping[str, Caller] | None = None,
) -> dict[str, Caller]:
    """``name:role+role:key`` entries separated by ``;`` into key → caller.

    A name may have several keys (a token rotation), all with the same roles, whether it
    authenticates by token or by certificate: idempotency keys are scoped by name, so one
    name with two sets of roles would be one caller whose rights depend on the credential
    it happens to present. Messages never show a token.
    """
    callers: dict[str, Caller] = {}
    roles_of = {c.name: c.roles for c in (elsewhere or {}).values()}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        parts = [part.strip() for part in entry.split(":", 2)]
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"{variable} entries must be name:roles:{key}")
        name, roles_text, credential = parts
        roles = frozenset(roles_text.split("+"))
        if unknown := roles - ROLES:
            raise ConfigError(f"{variable}: unknown role(s) {sorted(unknown)} for {name}")
        if len(credential) < shortest:
            raise ConfigError(f"{variable}: {key} of {name} must be {shortest}+ characters")
        if credential in callers:
            raise ConfigError(f"{variable}: a {key} is used twice ({name})")
        known = roles_of.setdefault(name, roles)
        if known != roles:
            raise ConfigError(
                f"{variable}: caller {name} has roles {'+'.join(sorted(roles))} here but "
                f"{'+'.join(sorted(known))} in an earlier entry or WALLET_CALLER_TOKENS; "
                "one name must not have different roles"
            )
        callers[credential] = Caller(name, roles)
    return callers


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
    callers = parse_certificate_callers(env.get("WALLET_TLS_CLIENT_CALLERS", ""), token_callers)
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
    return TlsSettings(
        certificate_chain=certificate[1],
        private_key=key[1],
        client_ca=None if client_ca is None else client_ca[1],
        client_callers=callers,
    )


def _credential(env: str, dev_value: str, meaning: str, *, secret: bool = True) -> Any:
    """A KasPro credential: the development value (the sandbox's) only when embedded."""
    return setting(env, dev_value, meaning, required=True, shown="dev value" if secret else "")


# The default retail payment amounts are the default prefixes'.
_RETAIL = DEFAULT_RETAIL_PREFIXES[0]


@dataclass(frozen=True)
class Config:
    grpc_listen: str = setting(
        "WALLET_GRPC_LISTEN",
        "127.0.0.1:50051",
        "gRPC listen address (`0.0.0.0:50051` to serve other hosts; port 0 = any free port)",
    )
    db_path: str = setting(
        "WALLET_DB_PATH",
        "var/wallet.db",
        "SQLite database file (created, WAL mode, migrated at start); unused with WALLET_DB_URL",
    )
    db_url: str = setting(
        "WALLET_DB_URL",
        "",
        "PostgreSQL instead of SQLite, `postgresql://user:password@host:port/database`: "
        'several replicas share it (docs/operations.md, "Several replicas"); unset: SQLite',
        parse=_postgres_url,
        shown="unset",
    )
    db_pool_size: int = setting(
        "WALLET_DB_POOL_SIZE",
        10,
        "PostgreSQL connections per replica at most (plus one that listens for events); "
        "replicas * (this + 1) must stay under the server's `max_connections`",
        minimum=1,
    )
    kaspro_base_url: str = setting(
        "WALLET_KASPRO_BASE_URL",
        EMBEDDED,
        "KasPro gateway base URL, e.g. `https://apigw-devel.kaspro.id`; `embedded` starts "
        "the sandbox in-process",
        parse=lambda text: text.rstrip("/"),
    )
    sandbox_listen: str = setting(
        "WALLET_SANDBOX_LISTEN",
        "127.0.0.1:8090",
        "where the embedded sandbox listens (only with `embedded`)",
    )
    kaspro_client_id: str = _credential("WALLET_KASPRO_CLIENT_ID", "wallet-dev", "OAuth2 client id")
    kaspro_client_secret: str = _credential(
        "WALLET_KASPRO_CLIENT_SECRET", "wallet-dev-secret", "OAuth2 client secret"
    )
    kaspro_hmac_key: str = _credential(
        "WALLET_KASPRO_HMAC_KEY", "wallet-dev-key", "HMAC key id, sent as `keyId` and `Partner-Key`"
    )
    kaspro_hmac_secret: str = _credential(
        "WALLET_KASPRO_HMAC_SECRET", "wallet-dev-hmac-secret", "HMAC secret for `KasPro-Signature`"
    )
    kaspro_callback_secret: str = _credential(
        "WALLET_KASPRO_CALLBACK_SECRET",
        "wallet-dev-callback-secret",
        "secret of KasPro's callback signatures",
    )
    kaspro_callback_secret_previous: str = setting(
        "WALLET_KASPRO_CALLBACK_SECRET_PREVIOUS",
        "",
        "the previous callback secret, also accepted during a rotation",
    )
    kaspro_escrow_account: str = _credential(
        "WALLET_KASPRO_ESCROW_ACCOUNT",
        "888000000000001",
        "KasPro account of the platform's escrow wallet (ride holds)",
        secret=False,
    )
    kaspro_merchant_account: str = _credential(
        "WALLET_KASPRO_MERCHANT_ACCOUNT",
        "888000000000002",
        "KasPro account of the platform's merchant wallet",
        secret=False,
    )
    kaspro_corporate_account: str = _credential(
        "WALLET_KASPRO_CORPORATE_ACCOUNT",
        "888000000000003",
        "KasPro account of the platform's corporate wallet (fees)",
        secret=False,
    )
    # The HTTP port's bounds and what unverified callbacks may cost (docs/operations.md,
    # "The callback port").
    http_listen: str = setting(
        "WALLET_HTTP_LISTEN",
        "127.0.0.1:8081",
        "HTTP port: KasPro callbacks (`POST /callbacks/kaspro`), `/healthz`, `/metrics`",
    )
    http_max_connections: int = setting(
        "WALLET_HTTP_MAX_CONNECTIONS",
        1000,
        "connections the HTTP port holds at once; more are closed at once. With "
        "`WALLET_KASPRO_MAX_CONNECTIONS` + 1,024 it must fit the open-file limit, or the "
        'start is refused (docs/operations.md, "The callback port")',
        minimum=1,
    )
    http_head_timeout_seconds: float = setting(
        "WALLET_HTTP_HEAD_TIMEOUT_SECONDS",
        10.0,
        "a request head must arrive within this of the connection (or of the previous "
        "response), or the connection is closed",
        minimum=0.1,
    )
    http_body_timeout_seconds: float = setting(
        "WALLET_HTTP_BODY_TIMEOUT_SECONDS",
        10.0,
        "a request body must arrive within this of its head, or the connection is closed",
        minimum=0.1,
    )
    http_keep_alive_seconds: int = setting(
        "WALLET_HTTP_KEEP_ALIVE_SECONDS",
        5,
        "an idle kept-alive connection is closed after this (whole seconds)",
        minimum=1,
    )
    unverified_callback_sample: int = setting(
        "WALLET_UNVERIFIED_CALLBACK_SAMPLE",
        100,
        "unverified callbacks kept to look at (the newest, first KiB each; `0` keeps none)",
    )
    unverified_top_up_checks: int = setting(
        "WALLET_UNVERIFIED_TOP_UP_CHECKS",
        100,
        "KasPro references of unverified top-ups on record at once to confirm by status "
        "inquiry; more are dropped and counted",
        minimum=1,
    )
    unverified_inquiry_period_seconds: float = setting(
        "WALLET_UNVERIFIED_INQUIRY_PERIOD_SECONDS",
        60.0,
        "KasPro is asked about the reference an unverified callback names at most once per "
        "this period",
        minimum=1.0,
    )
    kaspro_timeout_seconds: float = setting(
        "WALLET_KASPRO_TIMEOUT_SECONDS",
        10.0,
        "time limit of one KasPro call (also bounded by the caller's gRPC deadline); must "
        "be below `WALLET_RECONCILE_GRACE_SECONDS`",
        minimum=0.1,
    )
    kaspro_ekyc_timeout_seconds: float = setting(
        "WALLET_KASPRO_EKYC_TIMEOUT_SECONDS", 30.0, "time limit of the eKYC call", minimum=0.1
    )
    kaspro_max_connections: int = setting(
        "WALLET_KASPRO_MAX_CONNECTIONS",
        1024,
        "HTTP connections to KasPro at once (the shared client's pool; more calls wait in "
        "line): with KasPro answering in 200 ms, 1,024 connections carry at most ~5,000 "
        "calls/s. Lower it if KasPro caps connections per partner "
        "(docs/decisions/0005-kaspro-connection-pool.md)",
        minimum=1,
    )
    callers: Mapping[str, Caller] = setting(
        "WALLET_CALLER_TOKENS",
        {},
        "callers, `name:role+role:token` separated by `;`. Roles: `app`, `dispatch`, "
        "`pricing`, `admin` (required unless `embedded`). A name may have several tokens "
        "(a rotation), all with the same roles",
        parse=parse_callers,
        shown=f"`dev:admin:{DEV_TOKEN}` when `embedded`",
    )
    otp: OtpLimits = group(
        OtpLimits,
        "WALLET_OTP_",
        Setting(
            "WALLET_OTP_RESEND_COOLDOWN_SECONDS", "minimum time between two OTPs to one number"
        ),
        Setting("WALLET_OTP_HOURLY_CAP", "OTPs per number per rolling hour", minimum=1),
        Setting(
            "WALLET_OTP_MAX_FAILED_ATTEMPTS", "wrong OTPs before the number is locked", minimum=1
        ),
        Setting("WALLET_OTP_LOCK_SECONDS", "how long a number stays locked"),
    )
    limits: Limits = group(
        Limits,
        "WALLET_",
        Setting(
            "WALLET_BASIC_BALANCE_CAP_IDR", "most a basic (unverified) wallet may hold", minimum=1
        ),
        Setting(
            "WALLET_PREMIUM_BALANCE_CAP_IDR", "most a premium (eKYC) wallet may hold", minimum=1
        ),
        Setting(
            "WALLET_MONTHLY_VOLUME_CAP_IDR",
            "most that may move through a wallet in 30 days",
            minimum=1,
        ),
        Setting("WALLET_TIP_CAP_IDR", "largest tip", minimum=1),
        Setting("WALLET_MIN_CASH_OUT_IDR", "smallest cash-out amount", minimum=1),
        Setting("WALLET_MAX_CASH_OUT_IDR", "largest cash-out amount", minimum=1),
        Setting(
            "WALLET_HOLD_LIFETIME_SECONDS",
            "an uncaptured ride hold is voided (EXPIRED) after this",
            minimum=1.0,
        ),
    )
    cash_out_banks: Mapping[str, str] = setting(
        "WALLET_CASH_OUT_BANKS",
        BANKS,
        "comma-separated bank codes allowed for cash-out",
        parse=_banks,
        shown="all of `domain/funding.py`",
    )
    va_prefixes: tuple[VaPrefix, ...] = setting(
        "WALLET_TOPUP_VA_PREFIXES",
        DEFAULT_VA_PREFIXES,
        "VA prefixes for passengers: `code:Bank:prefix,…` (VA = prefix + national number)",
        parse=_va_prefixes,
    )
    driver_va_prefixes: tuple[VaPrefix, ...] = setting(
        "WALLET_DRIVER_VA_PREFIXES",
        DEFAULT_DRIVER_VA_PREFIXES,
        "the drivers' VA prefixes (a deposit there is a DRIVER_DEPOSIT); must not overlap",
        parse=_va_prefixes,
    )
    retail_prefixes: tuple[RetailPrefix, ...] = setting(
        "WALLET_TOPUP_RETAIL_PREFIXES",
        DEFAULT_RETAIL_PREFIXES,
        "retail payment-code prefixes for passengers",
        parse=_retail_prefixes,
    )
    driver_retail_prefixes: tuple[RetailPrefix, ...] = setting(
        "WALLET_DRIVER_RETAIL_PREFIXES",
        DEFAULT_DRIVER_RETAIL_PREFIXES,
        "and for drivers",
        parse=_retail_prefixes,
    )
    # Given to every retail prefix by load.
    retail_min_idr: int = setting(
        "WALLET_RETAIL_MIN_IDR",
        _RETAIL.min_amount_idr,
        "the least a retail payment may be, shown with the codes",
        minimum=1,
    )
    retail_max_idr: int = setting(
        "WALLET_RETAIL_MAX_IDR",
        _RETAIL.max_amount_idr,
        "the most a retail payment may be, shown with the codes",
        minimum=1,
    )
    reconcile_interval_seconds: float = setting(
        "WALLET_RECONCILE_INTERVAL_SECONDS",
        1.0,
        "how often the reconciler looks for due KasPro attempts",
        minimum=0.01,
    )
    reconcile_grace_seconds: float = setting(
        "WALLET_RECONCILE_GRACE_SECONDS",
        30.0,
        "an unanswered attempt is asked about after this (longer than any KasPro call: "
        "above `WALLET_KASPRO_TIMEOUT_SECONDS`)",
    )
    reconcile_overdue_seconds: float = setting(
        "WALLET_RECONCILE_OVERDUE_SECONDS",
        3600.0,
        "an attempt unresolved this long raises the overdue alert metric",
    )
    # The drift check (workers/drift.py; docs/operations.md, "Drift").
    drift_check_enabled: bool = setting(
        "WALLET_DRIFT_CHECK_ENABLED",
        True,
        "`true` or `false`: whether this replica compares KasPro's balances with the ledger "
        "and escrow with the open holds",
        parse=_switch,
        shown="`true`",
    )
    drift_check_interval_seconds: float = setting(
        "WALLET_DRIFT_CHECK_INTERVAL_SECONDS",
        60.0,
        "how often the drift check makes a pass (escrow's check runs once per interval "
        "across replicas)",
        minimum=0.01,
    )
    drift_check_batch: int = setting(
        "WALLET_DRIFT_CHECK_BATCH",
        100,
        "customer wallets with new ledger activity one pass compares at most (one KasPro "
        "account inquiry each)",
        minimum=1,
    )
    drift_confirm_seconds: float = setting(
        "WALLET_DRIFT_CONFIRM_SECONDS",
        900.0,
        "a difference is recorded as a drift only when the same difference is seen again "
        "this long after (a top-up's callback may be that late: KasPro retries it)",
    )
    idempotency_ttl_hours: float = setting(
        "WALLET_IDEMPOTENCY_TTL_HOURS",
        72.0,
        "how long request_ids are remembered (at least 72)",
        minimum=72.0,
    )
    max_image_bytes: int = setting(
        "WALLET_MAX_IMAGE_BYTES",
        5 * 1024 * 1024,
        "largest accepted eKYC image (each of three); the gRPC receive limit is 3 times this + "
        "64 KiB, the largest valid UpgradeKyc (docs/operations.md)",
        minimum=1024,
    )
    max_concurrent_rpcs: int = setting(
        "WALLET_MAX_CONCURRENT_RPCS",
        1000,
        "calls served at once; more are refused with RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_watch_streams: int = setting(
        "WALLET_MAX_WATCH_STREAMS",
        100,
        "WatchEvents streams open at once, all callers together; more are refused with "
        "RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_watch_streams_per_caller: int = setting(
        "WALLET_MAX_WATCH_STREAMS_PER_CALLER",
        20,
        "WatchEvents streams open at once per caller name",
        minimum=1,
    )
    min_money_deadline_seconds: float = setting(
        "WALLET_MIN_MONEY_DEADLINE_SECONDS",
        1.0,
        "a money RPC with less than this left on its gRPC deadline is refused at once with "
        "UNAVAILABLE / PROVIDER_UNAVAILABLE, before any KasPro call (`0` = off; "
        "docs/operations.md)",
    )
    grace_period_seconds: float = setting(
        "WALLET_GRACE_PERIOD_SECONDS",
        10.0,
        "on SIGTERM/SIGINT, how long in-flight calls may finish",
    )
    log_level: str = setting(
        "WALLET_LOG_LEVEL",
        "INFO",
        "`DEBUG`, `INFO`, `WARNING` or `ERROR` (JSON lines on stderr)",
        parse=_log_level,
    )
    tls: TlsSettings | None = documented(
        None,
        Setting(
            "WALLET_TLS_CERT_FILE",
            "PEM certificate chain of the gRPC port; set with `WALLET_TLS_KEY_FILE`, the "
            "port speaks TLS only (docs/operations.md)",
            shown="empty (plaintext)",
        ),
        Setting("WALLET_TLS_KEY_FILE", "PEM private key of that certificate (unencrypted)"),
        Setting(
            "WALLET_TLS_CLIENT_CA_FILE",
            "PEM CA certificate(s): mutual TLS, every client must present a certificate they "
            "signed (needs the two above)",
        ),
        Setting(
            "WALLET_TLS_CLIENT_CALLERS",
            "client certificates as callers: `name:role+role:common-name` separated by `;` "
            "(subject CN → caller name and roles); needs `WALLET_TLS_CLIENT_CA_FILE`",
        ),
    )

    @property
    def database(self) -> str:
        """What ``Database.open`` opens: the PostgreSQL URL, else the SQLite file."""
        return self.db_url or self.db_path

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
        )


def load(env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from the environment (``os.environ`` by default)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for one, declared, default in _variables():
        if "documents" in one.metadata:
            continue
        value = _read(env, declared, default)
        if "prefix" in one.metadata:  # a group: the value's attributes, one by one
            value = replace(
                values.get(one.name, _default(one)), **{_attribute(one, declared): value}
            )
        values[one.name] = value
        unset = not env.get(declared.env, "").strip()
        if declared.required and unset and values["kaspro_base_url"] != EMBEDDED:
            raise ConfigError(f"{declared.env} is required when WALLET_KASPRO_BASE_URL is set")

    timeout, grace = values["kaspro_timeout_seconds"], values["reconcile_grace_seconds"]
    if timeout >= grace:
        # A send is asked about, and may be sent again, once the grace after it is over,
        # and a flight claim lasts the grace and a margin: both rely on every KasPro
        # money call (token fetch and wait for a connection included) ending within it.
        raise ConfigError(
            f"WALLET_KASPRO_TIMEOUT_SECONDS ({timeout:g}) must be below "
            f"WALLET_RECONCILE_GRACE_SECONDS ({grace:g}): a KasPro call must end within the "
            "grace before its attempt is asked about or sent again"
        )
    low, high = values["retail_min_idr"], values["retail_max_idr"]
    if low > high:
        raise ConfigError("WALLET_RETAIL_MIN_IDR must not exceed WALLET_RETAIL_MAX_IDR")
    for name in ("retail_prefixes", "driver_retail_prefixes"):
        values[name] = tuple(
            replace(p, min_amount_idr=low, max_amount_idr=high) for p in values[name]
        )
    _distinct_prefixes(values["va_prefixes"], values["driver_va_prefixes"], "VA")
    _distinct_prefixes(values["retail_prefixes"], values["driver_retail_prefixes"], "retail")

    callers = values["callers"]
    tls = _tls(env, callers)
    certificate_callers = tls.client_callers if tls is not None else {}
    if not callers and not certificate_callers:
        if values["kaspro_base_url"] != EMBEDDED:
            raise ConfigError(
                "WALLET_CALLER_TOKENS (or WALLET_TLS_CLIENT_CALLERS) is required when "
                "WALLET_KASPRO_BASE_URL is set"
            )
        values["callers"] = {DEV_TOKEN: Caller("dev", frozenset({"admin"}))}
    return Config(**values, tls=tls)


def _variables() -> Iterator[tuple[Field[Any], Setting, Any]]:
    """Every declared variable with its Config field and default, in the fields' order."""
    for one in fields(Config):
        default = _default(one)
        for declared in (*one.metadata.get("settings", ()), *one.metadata.get("documents", ())):
            if "prefix" in one.metadata:
                yield one, declared, getattr(default, _attribute(one, declared))
            else:
                yield one, declared, default


def _attribute(one: Field[Any], declared: Setting) -> str:
    """In a group, the attribute of the field's value that ``declared`` sets."""
    return declared.env.removeprefix(one.metadata["prefix"]).lower()


def _default(one: Field[Any]) -> Any:
    return one.default if one.default_factory is MISSING else one.default_factory()


def _read(env: Mapping[str, str], declared: Setting, default: Any) -> Any:
    """The variable's value, or ``default`` when it is unset or blank."""
    raw = env.get(declared.env, "").strip()
    if not raw:
        return default
    try:
        if declared.parse is not None:
            return declared.parse(raw)
        if isinstance(default, str):
            return raw
        if isinstance(default, int):
            if not (raw.isascii() and raw.isdigit()) or int(raw) < declared.minimum:
                raise ValueError(
                    f"must be an integer of at least {declared.minimum:g}, got {raw!r}"
                )
            return int(raw)
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {raw!r}")
        if value < declared.minimum:
            raise ValueError(f"must be at least {declared.minimum:g}")
        return value
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{declared.env} {exc}") from None


def markdown_table() -> str:
    """The README's configuration table, from the declarations."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for _, declared, default in _variables():
        required = " (required unless `embedded`)" if declared.required else ""
        shown = declared.shown or _shown(default)
        rows.append(f"| `{declared.env}` | {shown} | {declared.meaning}{required} |")
    return "\n".join(rows) + "\n"


def _shown(value: object) -> str:
    if value is None or value == "":
        return "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, tuple):
        value = ",".join(
            f"{p.bank_code}:{p.bank_name}:{p.prefix}"
            if isinstance(p, VaPrefix)
            else f"{p.outlet}:{p.prefix}"
            for p in value
        )
    return f"`{value}`"


def _distinct_prefixes(
    users: tuple[VaPrefix | RetailPrefix, ...],
    drivers: tuple[VaPrefix | RetailPrefix, ...],
    kind: str,
) -> None:
    """A deposit is a driver's when its number starts with a driver prefix: the two sets
    must not overlap, or a passenger's top-up could be taken for a driver's deposit."""
    for user in users:
        for driver in drivers:
            if user.prefix.startswith(driver.prefix) or driver.prefix.startswith(user.prefix):
                raise ConfigError(
                    f"{kind} prefixes {user.prefix} (top-up) and {driver.prefix} (driver) overlap"
                )


if __name__ == "__main__":
    sys.stdout.write(markdown_table())

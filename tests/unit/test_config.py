"""Settings from WALLET_* variables: defaults, dev credentials only when embedded, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from wallet.v1 import account_service_pb2

from wallet_service.config import (
    DEV_TOKEN,
    EMBEDDED,
    Caller,
    Config,
    ConfigError,
    load,
    markdown_table,
    parse_callers,
    parse_certificate_callers,
)
from wallet_service.domain.funding import RetailPrefix, VaPrefix
from wallet_service.domain.otp import OtpLimits

PRODUCTION = {
    "WALLET_KASPRO_BASE_URL": "https://apigw.example.id/",
    "WALLET_KASPRO_CLIENT_ID": "prod-client",
    "WALLET_KASPRO_CLIENT_SECRET": "prod-client-secret",
    "WALLET_KASPRO_HMAC_KEY": "prod-key",
    "WALLET_KASPRO_HMAC_SECRET": "prod-hmac-secret",
    "WALLET_KASPRO_CALLBACK_SECRET": "prod-callback-secret",
    "WALLET_KASPRO_ESCROW_ACCOUNT": "888100000000001",
    "WALLET_KASPRO_MERCHANT_ACCOUNT": "888100000000002",
    "WALLET_KASPRO_CORPORATE_ACCOUNT": "888100000000003",
    "WALLET_CALLER_TOKENS": "dispatch:dispatch:dispatch-token-1;app:app:app-token-12",
}
CREDENTIAL_VARIABLES = [
    "WALLET_KASPRO_CLIENT_ID",
    "WALLET_KASPRO_CLIENT_SECRET",
    "WALLET_KASPRO_HMAC_KEY",
    "WALLET_KASPRO_HMAC_SECRET",
    "WALLET_KASPRO_CALLBACK_SECRET",
    "WALLET_KASPRO_ESCROW_ACCOUNT",
    "WALLET_KASPRO_MERCHANT_ACCOUNT",
    "WALLET_KASPRO_CORPORATE_ACCOUNT",
]


README = Path(__file__).resolve().parents[2] / "README.md"


def with_(base: dict[str, str], **changes: str) -> dict[str, str]:
    return {**base, **changes}


# The embedded default.


def test_an_empty_environment_is_the_embedded_development_setup() -> None:
    config = load({})
    assert config.kaspro_base_url == EMBEDDED
    assert config.embedded_sandbox
    assert config.callers == {DEV_TOKEN: Caller("dev", frozenset({"admin"}))}
    assert (config.kaspro_client_id, config.kaspro_client_secret) == (
        "wallet-dev",
        "wallet-dev-secret",
    )
    assert (config.kaspro_hmac_key, config.kaspro_hmac_secret) == (
        "wallet-dev-key",
        "wallet-dev-hmac-secret",
    )
    assert config.grpc_listen == "127.0.0.1:50051"
    assert config.db_path == "var/wallet.db"
    assert config.sandbox_listen == "127.0.0.1:8090"
    assert config.kaspro_timeout_seconds == 10.0
    assert config.kaspro_ekyc_timeout_seconds == 30.0
    assert config.otp == OtpLimits()
    assert config.idempotency_ttl_hours == 72.0
    assert config.max_image_bytes == 5 * 1024 * 1024
    assert config.max_concurrent_rpcs == 1000
    assert config.grace_period_seconds == 10.0
    assert config.log_level == "INFO"


def test_load_defaults_match_the_dataclass_defaults() -> None:
    assert load({}) == Config(callers={DEV_TOKEN: Caller("dev", frozenset({"admin"}))})


@pytest.mark.parametrize("value", ["", "   ", "embedded", " embedded ", "embedded/"])
def test_blank_or_embedded_base_url_means_the_embedded_sandbox(value: str) -> None:
    config = load({"WALLET_KASPRO_BASE_URL": value})
    assert config.embedded_sandbox
    assert DEV_TOKEN in config.callers


def test_embedded_mode_uses_configured_callers_instead_of_the_dev_token() -> None:
    config = load({"WALLET_CALLER_TOKENS": "ops:admin:ops-token-123"})
    assert config.callers == {"ops-token-123": Caller("ops", frozenset({"admin"}))}


def test_embedded_mode_takes_configured_credentials_over_dev_ones() -> None:
    config = load({"WALLET_KASPRO_CLIENT_ID": "mine"})
    assert config.kaspro_client_id == "mine"
    assert config.kaspro_client_secret == "wallet-dev-secret"


def test_os_environ_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_GRPC_LISTEN", "0.0.0.0:6000")
    monkeypatch.delenv("WALLET_KASPRO_BASE_URL", raising=False)
    monkeypatch.delenv("WALLET_CALLER_TOKENS", raising=False)
    assert load().grpc_listen == "0.0.0.0:6000"


# A real KasPro gateway: no development defaults.


def test_a_production_setup() -> None:
    config = load(PRODUCTION)
    assert not config.embedded_sandbox
    assert config.kaspro_base_url == "https://apigw.example.id"
    assert config.kaspro_client_id == "prod-client"
    assert config.kaspro_client_secret == "prod-client-secret"
    assert config.kaspro_hmac_key == "prod-key"
    assert config.kaspro_hmac_secret == "prod-hmac-secret"
    assert DEV_TOKEN not in config.callers
    assert config.callers == {
        "dispatch-token-1": Caller("dispatch", frozenset({"dispatch"})),
        "app-token-12": Caller("app", frozenset({"app"})),
    }


@pytest.mark.parametrize("variable", CREDENTIAL_VARIABLES)
@pytest.mark.parametrize("value", [None, "", "  "])
def test_production_requires_every_credential(variable: str, value: str | None) -> None:
    env = dict(PRODUCTION)
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    with pytest.raises(ConfigError, match=variable):
        load(env)


@pytest.mark.parametrize("value", [None, "", " ; ;"])
def test_production_requires_caller_tokens(value: str | None) -> None:
    env = dict(PRODUCTION)
    if value is None:
        del env["WALLET_CALLER_TOKENS"]
    else:
        env["WALLET_CALLER_TOKENS"] = value
    with pytest.raises(ConfigError, match="WALLET_CALLER_TOKENS"):
        load(env)


def test_kaspro_settings_carry_the_credentials_and_timeouts() -> None:
    config = load(
        with_(
            PRODUCTION,
            WALLET_KASPRO_TIMEOUT_SECONDS="2.5",
            WALLET_KASPRO_EKYC_TIMEOUT_SECONDS="45",
        )
    )
    settings = config.kaspro_settings("http://127.0.0.1:9999")
    assert settings.base_url == "http://127.0.0.1:9999"
    assert settings.client_id == "prod-client"
    assert settings.client_secret == "prod-client-secret"
    assert settings.hmac_key == "prod-key"
    assert settings.hmac_secret == "prod-hmac-secret"
    assert settings.timeout_seconds == 2.5
    assert settings.ekyc_timeout_seconds == 45.0


# Every other variable.


def test_every_variable_is_read() -> None:
    config = load(
        {
            "WALLET_GRPC_LISTEN": " [::]:50052 ",
            "WALLET_DB_PATH": "/data/wallet.db",
            "WALLET_SANDBOX_LISTEN": "127.0.0.1:0",
            "WALLET_KASPRO_TIMEOUT_SECONDS": "0.1",
            "WALLET_KASPRO_EKYC_TIMEOUT_SECONDS": "60",
            "WALLET_OTP_RESEND_COOLDOWN_SECONDS": "0",
            "WALLET_OTP_HOURLY_CAP": "3",
            "WALLET_OTP_MAX_FAILED_ATTEMPTS": "1",
            "WALLET_OTP_LOCK_SECONDS": "900.5",
            "WALLET_IDEMPOTENCY_TTL_HOURS": "96",
            "WALLET_MAX_IMAGE_BYTES": "1024",
            "WALLET_MAX_CONCURRENT_RPCS": "1",
            "WALLET_GRACE_PERIOD_SECONDS": "0",
            "WALLET_LOG_LEVEL": "debug",
        }
    )
    assert config.grpc_listen == "[::]:50052"
    assert config.db_path == "/data/wallet.db"
    assert config.sandbox_listen == "127.0.0.1:0"
    assert config.kaspro_timeout_seconds == 0.1
    assert config.kaspro_ekyc_timeout_seconds == 60.0
    assert config.otp == OtpLimits(
        resend_cooldown_seconds=0.0, hourly_cap=3, max_failed_attempts=1, lock_seconds=900.5
    )
    assert config.idempotency_ttl_hours == 96.0
    assert config.max_image_bytes == 1024
    assert config.max_concurrent_rpcs == 1
    assert config.grace_period_seconds == 0.0
    assert config.log_level == "DEBUG"


@pytest.mark.parametrize("cap", [1024, 5 * 1024 * 1024])
def test_the_receive_limit_is_the_largest_valid_request_and_a_little(cap: int) -> None:
    config = load({"WALLET_MAX_IMAGE_BYTES": str(cap)})
    largest = account_service_pb2.UpgradeKycRequest(
        request_id="k" * 64,
        mobile_number="+62812345678901",
        id_card_image=b"\xff" * cap,
        selfie_image=b"\xff" * cap,
        selfie_with_id_card_image=b"\xff" * cap,
    )
    assert largest.ByteSize() <= config.max_message_bytes <= largest.ByteSize() + 64 * 1024


def test_the_drift_check_runs_by_default_and_is_configurable() -> None:
    default = load({})
    assert default.drift_check_enabled
    assert (default.drift_check_interval_seconds, default.drift_check_batch) == (60.0, 100)
    assert default.drift_confirm_seconds == 900.0
    config = load(
        {
            "WALLET_DRIFT_CHECK_ENABLED": "FALSE",
            "WALLET_DRIFT_CHECK_INTERVAL_SECONDS": "5",
            "WALLET_DRIFT_CHECK_BATCH": "7",
            "WALLET_DRIFT_CONFIRM_SECONDS": "0",
        }
    )
    assert not config.drift_check_enabled
    assert (config.drift_check_interval_seconds, config.drift_check_batch) == (5.0, 7)
    assert config.drift_confirm_seconds == 0.0
    assert load({"WALLET_DRIFT_CHECK_ENABLED": "true"}).drift_check_enabled


def test_watch_streams_are_bounded_by_default_and_configurable() -> None:
    assert (load({}).max_watch_streams, load({}).max_watch_streams_per_caller) == (100, 20)
    config = load({"WALLET_MAX_WATCH_STREAMS": "7", "WALLET_MAX_WATCH_STREAMS_PER_CALLER": "3"})
    assert (config.max_watch_streams, config.max_watch_streams_per_caller) == (7, 3)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WALLET_KASPRO_TIMEOUT_SECONDS", "ten"),
        ("WALLET_KASPRO_TIMEOUT_SECONDS", "0.09"),
        ("WALLET_KASPRO_TIMEOUT_SECONDS", "0"),
        ("WALLET_KASPRO_TIMEOUT_SECONDS", "-1"),
        ("WALLET_KASPRO_TIMEOUT_SECONDS", "10s"),
        ("WALLET_KASPRO_EKYC_TIMEOUT_SECONDS", "0.05"),
        ("WALLET_OTP_RESEND_COOLDOWN_SECONDS", "-1"),
        ("WALLET_OTP_LOCK_SECONDS", "-0.5"),
        ("WALLET_GRACE_PERIOD_SECONDS", "-1"),
        ("WALLET_IDEMPOTENCY_TTL_HOURS", "71.9"),
        ("WALLET_IDEMPOTENCY_TTL_HOURS", "24"),
        ("WALLET_OTP_HOURLY_CAP", "0"),
        ("WALLET_OTP_HOURLY_CAP", "-1"),
        ("WALLET_OTP_HOURLY_CAP", "2.5"),
        ("WALLET_OTP_HOURLY_CAP", "five"),
        ("WALLET_OTP_MAX_FAILED_ATTEMPTS", "0"),
        ("WALLET_MAX_IMAGE_BYTES", "1023"),
        ("WALLET_MAX_IMAGE_BYTES", "5MB"),
        ("WALLET_MAX_CONCURRENT_RPCS", "0"),
        ("WALLET_MAX_CONCURRENT_RPCS", "1e3"),
        ("WALLET_MAX_WATCH_STREAMS", "0"),
        ("WALLET_MAX_WATCH_STREAMS_PER_CALLER", "0"),
        ("WALLET_DRIFT_CHECK_ENABLED", "yes"),
        ("WALLET_DRIFT_CHECK_ENABLED", "1"),
        ("WALLET_DRIFT_CHECK_INTERVAL_SECONDS", "0"),
        ("WALLET_DRIFT_CHECK_INTERVAL_SECONDS", "nan"),
        ("WALLET_DRIFT_CHECK_BATCH", "0"),
        ("WALLET_DRIFT_CHECK_BATCH", "ten"),
        ("WALLET_DRIFT_CONFIRM_SECONDS", "-1"),
    ],
)
def test_malformed_or_too_small_values_are_config_errors(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load({variable: value})


@pytest.mark.parametrize(
    "variable",
    [
        "WALLET_KASPRO_TIMEOUT_SECONDS",
        "WALLET_OTP_RESEND_COOLDOWN_SECONDS",
        "WALLET_OTP_LOCK_SECONDS",
    ],
)
def test_nan_is_not_a_number_setting(variable: str) -> None:
    # float("nan") parses, and NaN fails every comparison, so "nan" slips past the
    # minimum check: an OTP cooldown or lock of NaN silently never applies.
    with pytest.raises(ConfigError, match=variable):
        load({variable: "nan"})


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "\uff15"])
def test_integers_are_ascii_digits_and_refused_with_a_config_error(value: str) -> None:
    # str.isdigit() is true for a superscript two and for Arabic-Indic or fullwidth
    # digits; int() then raises a bare ValueError (superscript) or reads them as 12 and 5.
    with pytest.raises(ConfigError, match="WALLET_OTP_HOURLY_CAP"):
        load({"WALLET_OTP_HOURLY_CAP": value})


@pytest.mark.parametrize("value", ["LOUD", "verbose", "5x"])
def test_an_unknown_log_level_is_a_config_error(value: str) -> None:
    # Accepting it here only moves the failure to logging.setLevel at start-up, as a
    # traceback instead of the one-line ConfigError message.
    with pytest.raises(ConfigError, match="WALLET_LOG_LEVEL"):
        load({"WALLET_LOG_LEVEL": value})


@pytest.mark.parametrize("value", ["debug", "INFO", "Warning", "ERROR", "CRITICAL"])
def test_standard_log_levels_are_upper_cased(value: str) -> None:
    assert load({"WALLET_LOG_LEVEL": value}).log_level == value.upper()


# Funding prefixes, banks and retail amounts.


def test_prefixes_banks_and_retail_amounts_are_read() -> None:
    config = load(
        {
            "WALLET_TOPUP_VA_PREFIXES": "451:BSI:90001, 014:BCA:12345",
            "WALLET_DRIVER_VA_PREFIXES": "451:BSI:90002",
            "WALLET_TOPUP_RETAIL_PREFIXES": "indomaret:555",
            "WALLET_DRIVER_RETAIL_PREFIXES": "ALFAMART:556",
            "WALLET_RETAIL_MIN_IDR": "20000",
            "WALLET_RETAIL_MAX_IDR": "1000000",
            "WALLET_CASH_OUT_BANKS": "014, 451",
        }
    )
    assert config.va_prefixes == (VaPrefix("451", "BSI", "90001"), VaPrefix("014", "BCA", "12345"))
    assert config.driver_va_prefixes == (VaPrefix("451", "BSI", "90002"),)
    assert config.retail_prefixes == (RetailPrefix("INDOMARET", "555", 20_000, 1_000_000),)
    assert config.driver_retail_prefixes == (RetailPrefix("ALFAMART", "556", 20_000, 1_000_000),)
    assert config.cash_out_banks == {"014": "BCA", "451": "BSI"}


def test_retail_amounts_apply_to_the_default_prefixes() -> None:
    config = load({"WALLET_RETAIL_MAX_IDR": "750000"})
    assert {p.max_amount_idr for p in config.retail_prefixes + config.driver_retail_prefixes} == {
        750_000
    }


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"WALLET_TOPUP_VA_PREFIXES": "14:BCA:1"}, "WALLET_TOPUP_VA_PREFIXES entries"),
        ({"WALLET_DRIVER_VA_PREFIXES": "014::1"}, "WALLET_DRIVER_VA_PREFIXES entries"),
        ({"WALLET_TOPUP_RETAIL_PREFIXES": "7-ELEVEN:1"}, "WALLET_TOPUP_RETAIL_PREFIXES entries"),
        ({"WALLET_DRIVER_VA_PREFIXES": "014:BCA:3935"}, "VA prefixes 39358 .* overlap"),
        ({"WALLET_DRIVER_RETAIL_PREFIXES": "ALFAMART:70"}, "retail prefixes 7010 .* overlap"),
        ({"WALLET_CASH_OUT_BANKS": "014,999"}, "WALLET_CASH_OUT_BANKS has unknown bank codes"),
        (
            {"WALLET_RETAIL_MIN_IDR": "20000", "WALLET_RETAIL_MAX_IDR": "10000"},
            "WALLET_RETAIL_MIN_IDR must not exceed WALLET_RETAIL_MAX_IDR",
        ),
    ],
)
def test_malformed_prefixes_banks_and_amounts_are_config_errors(
    variables: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        load(variables)


# Time limits the money rules rely on.


@pytest.mark.parametrize(
    ("timeout", "grace"), [("30", None), ("31", None), ("5", "5"), ("10", "9.5")]
)
def test_a_kaspro_timeout_not_below_the_reconcile_grace_is_a_config_error(
    timeout: str, grace: str | None
) -> None:
    variables = {"WALLET_KASPRO_TIMEOUT_SECONDS": timeout}
    if grace is not None:
        variables["WALLET_RECONCILE_GRACE_SECONDS"] = grace
    with pytest.raises(
        ConfigError,
        match=r"WALLET_KASPRO_TIMEOUT_SECONDS .* must be below WALLET_RECONCILE_GRACE_SECONDS",
    ):
        load(variables)


def test_a_kaspro_timeout_below_the_reconcile_grace_is_accepted() -> None:
    defaults = load({})
    assert defaults.kaspro_timeout_seconds < defaults.reconcile_grace_seconds
    config = load({"WALLET_KASPRO_TIMEOUT_SECONDS": "29.9", "WALLET_RECONCILE_GRACE_SECONDS": "30"})
    assert (config.kaspro_timeout_seconds, config.reconcile_grace_seconds) == (29.9, 30.0)


# Caller tokens.


def test_parse_callers_maps_tokens_to_callers() -> None:
    callers = parse_callers(
        " dispatch:dispatch:tok-dispatch-1 ; app:app+admin:tok-app-123;;pricing:pricing:p:r:i:c:e "
    )
    assert callers == {
        "tok-dispatch-1": Caller("dispatch", frozenset({"dispatch"})),
        "tok-app-123": Caller("app", frozenset({"app", "admin"})),
        # Only the first two colons separate: a token may contain colons.
        "p:r:i:c:e": Caller("pricing", frozenset({"pricing"})),
    }


@pytest.mark.parametrize("text", ["", " ", ";", " ; ; "])
def test_parse_callers_of_nothing_is_empty(text: str) -> None:
    assert parse_callers(text) == {}


def test_one_name_may_hold_several_tokens() -> None:
    callers = parse_callers("app:app:old-token-1;app:app:new-token-2")
    assert set(callers) == {"old-token-1", "new-token-2"}


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("app:app:old-token-1;app:app+admin:new-token-2", "app"),
        ("ops:admin:old-token-1;app:app:app-token-1;ops:dispatch:new-token-2", "ops"),
        # The same roles in another order are the same roles; the third entry differs.
        ("app:app+dispatch:token-one-1;app:dispatch+app:token-two-2;app:app:token-three", "app"),
    ],
)
def test_one_name_with_different_roles_is_refused_without_showing_tokens(
    text: str, name: str
) -> None:
    with pytest.raises(ConfigError, match=f"WALLET_CALLER_TOKENS: caller {name} ") as caught:
        parse_callers(text)
    assert "different roles" in str(caught.value)
    for entry in text.split(";"):
        assert entry.rsplit(":", 1)[1] not in str(caught.value)


def test_one_name_with_the_same_roles_in_another_order_is_a_rotation() -> None:
    callers = parse_callers("app:app+dispatch:old-token-1;app:dispatch+app:new-token-2")
    assert {c.roles for c in callers.values()} == {frozenset({"app", "dispatch"})}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("app", "name:roles:token"),
        ("app:app", "name:roles:token"),
        (":app:token-token", "name:roles:token"),
        ("app::token-token", "name:roles:token"),
        ("app:app:", "name:roles:token"),
        ("app:root:token-token", "unknown role"),
        ("app:app+root:token-token", "unknown role"),
        ("app:app+:token-token", "unknown role"),
        ("app:App:token-token", "unknown role"),
        ("app:app:short12", "8\\+ characters"),
        ("a:app:same-token;b:dispatch:same-token", "used twice"),
    ],
)
def test_parse_callers_refuses_malformed_entries(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_callers(text)


def test_a_token_of_eight_characters_is_enough() -> None:
    assert parse_callers("app:app:12345678") == {"12345678": Caller("app", frozenset({"app"}))}


def test_config_errors_do_not_echo_tokens() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_callers("app:app:secret7")
    assert "secret7" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_callers("a:app:secret-token;b:app:secret-token")
    assert "secret-token" not in str(caught.value)


def test_load_reports_caller_errors() -> None:
    with pytest.raises(ConfigError, match="WALLET_CALLER_TOKENS"):
        load({"WALLET_CALLER_TOKENS": "app:wizard:token-token"})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# The deadline guard of money calls.


def test_the_money_deadline_guard_defaults_to_one_second() -> None:
    assert load({}).min_money_deadline_seconds == 1.0


@pytest.mark.parametrize(("value", "seconds"), [("2.5", 2.5), ("0", 0.0), (" 1 ", 1.0)])
def test_the_money_deadline_guard_is_read(value: str, seconds: float) -> None:
    assert load({"WALLET_MIN_MONEY_DEADLINE_SECONDS": value}).min_money_deadline_seconds == seconds


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1s", "one"])
def test_a_malformed_money_deadline_guard_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="WALLET_MIN_MONEY_DEADLINE_SECONDS"):
        load({"WALLET_MIN_MONEY_DEADLINE_SECONDS": value})


# Certificate callers and the TLS variables that go together (tests/integration/test_tls.py
# covers real certificates and keys).


def test_parse_certificate_callers_maps_common_names_to_callers() -> None:
    callers = parse_certificate_callers(
        " dispatch:dispatch:dispatch-svc ; app:app+admin:app.backend.internal;;odd:pricing:a:b "
    )
    assert callers == {
        "dispatch-svc": Caller("dispatch", frozenset({"dispatch"})),
        "app.backend.internal": Caller("app", frozenset({"app", "admin"})),
        # Only the first two colons separate: a common name may contain colons.
        "a:b": Caller("odd", frozenset({"pricing"})),
    }


@pytest.mark.parametrize("text", ["", " ", ";", " ; ; "])
def test_parse_certificate_callers_of_nothing_is_empty(text: str) -> None:
    assert parse_certificate_callers(text) == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("dispatch", "name:roles:common-name"),
        ("dispatch:dispatch", "name:roles:common-name"),
        (":dispatch:dispatch-svc", "name:roles:common-name"),
        ("dispatch::dispatch-svc", "name:roles:common-name"),
        ("dispatch:dispatch: ", "name:roles:common-name"),
        ("dispatch:driver:dispatch-svc", "unknown role"),
        ("dispatch:dispatch+:dispatch-svc", "unknown role"),
        ("a:app:same-svc;b:dispatch:same-svc", "used twice"),
    ],
)
def test_parse_certificate_callers_refuses_malformed_entries(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"WALLET_TLS_CLIENT_CALLERS.*{problem}"):
        parse_certificate_callers(text)


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    """Files that look like PEM: enough for the checks made before the files are parsed."""
    files = {}
    for name, label in [("cert", "CERTIFICATE"), ("key", "PRIVATE KEY"), ("ca", "CERTIFICATE")]:
        path = tmp_path / f"{name}.pem"
        path.write_text(f"-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n")
        files[name] = str(path)
    return files


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"WALLET_TLS_CERT_FILE": "cert"}, "WALLET_TLS_CERT_FILE and WALLET_TLS_KEY_FILE"),
        ({"WALLET_TLS_KEY_FILE": "key"}, "WALLET_TLS_CERT_FILE and WALLET_TLS_KEY_FILE"),
        (
            {"WALLET_TLS_CERT_FILE": "cert", "WALLET_TLS_CLIENT_CA_FILE": "ca"},
            "WALLET_TLS_CERT_FILE and WALLET_TLS_KEY_FILE",
        ),
        ({"WALLET_TLS_CLIENT_CA_FILE": "ca"}, "WALLET_TLS_CLIENT_CA_FILE needs TLS"),
        (
            {"WALLET_TLS_CLIENT_CALLERS": "dispatch:dispatch:dispatch-svc"},
            "WALLET_TLS_CLIENT_CALLERS needs mutual TLS",
        ),
        (
            {
                "WALLET_TLS_CERT_FILE": "cert",
                "WALLET_TLS_KEY_FILE": "key",
                "WALLET_TLS_CLIENT_CALLERS": "dispatch:dispatch:dispatch-svc",
            },
            "WALLET_TLS_CLIENT_CALLERS needs WALLET_TLS_CLIENT_CA_FILE",
        ),
    ],
)
def test_tls_variables_that_go_together(
    pem_files: dict[str, str], variables: dict[str, str], problem: str
) -> None:
    env = {name: pem_files.get(value, value) for name, value in variables.items()}
    with pytest.raises(ConfigError, match=problem):
        load(env)


def test_tls_files_that_are_not_certificates_are_config_errors(pem_files: dict[str, str]) -> None:
    # The placeholders look like PEM but hold no certificate: parsing them fails at load,
    # not at the first handshake.
    with pytest.raises(ConfigError, match="WALLET_TLS_CERT_FILE / WALLET_TLS_KEY_FILE"):
        load({"WALLET_TLS_CERT_FILE": pem_files["cert"], "WALLET_TLS_KEY_FILE": pem_files["key"]})


def test_an_unreadable_tls_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=f"WALLET_TLS_CERT_FILE: cannot read {missing}"):
        load({"WALLET_TLS_CERT_FILE": str(missing), "WALLET_TLS_KEY_FILE": str(missing)})


# The README's table.


def test_the_readme_table_is_the_one_the_declarations_print() -> None:
    # Regenerate it with `python -m wallet_service.config` when a setting changes.
    readme = README.read_text()
    start = readme.index("| variable | default | meaning |")
    assert readme[start:].startswith(markdown_table())

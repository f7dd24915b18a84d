"""The HTTP port's bounds: their WALLET_* settings, and the descriptor budget at start-up."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import pytest

from wallet_service import descriptors
from wallet_service.__main__ import main
from wallet_service.config import Config, ConfigError, load


def test_the_bounds_are_read() -> None:
    config = load(
        {
            "WALLET_HTTP_MAX_CONNECTIONS": "50",
            "WALLET_HTTP_HEAD_TIMEOUT_SECONDS": "2.5",
            "WALLET_HTTP_BODY_TIMEOUT_SECONDS": "0.5",
            "WALLET_HTTP_KEEP_ALIVE_SECONDS": "30",
            "WALLET_UNVERIFIED_CALLBACK_SAMPLE": "0",
            "WALLET_UNVERIFIED_TOP_UP_CHECKS": "7",
            "WALLET_UNVERIFIED_INQUIRY_PERIOD_SECONDS": "600",
        }
    )

    assert (
        config.http_max_connections,
        config.http_head_timeout_seconds,
        config.http_body_timeout_seconds,
        config.http_keep_alive_seconds,
        config.unverified_callback_sample,
        config.unverified_top_up_checks,
        config.unverified_inquiry_period_seconds,
    ) == (50, 2.5, 0.5, 30, 0, 7, 600.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WALLET_HTTP_MAX_CONNECTIONS", "0"),
        ("WALLET_HTTP_MAX_CONNECTIONS", "1e3"),
        ("WALLET_HTTP_HEAD_TIMEOUT_SECONDS", "0"),
        ("WALLET_HTTP_BODY_TIMEOUT_SECONDS", "nan"),
        ("WALLET_HTTP_KEEP_ALIVE_SECONDS", "0"),
        ("WALLET_HTTP_KEEP_ALIVE_SECONDS", "2.5"),
        ("WALLET_UNVERIFIED_CALLBACK_SAMPLE", "-1"),
        # Zero would leave unverified top-ups unconfirmed, and a period of zero would
        # let every unverified post buy a KasPro call.
        ("WALLET_UNVERIFIED_TOP_UP_CHECKS", "0"),
        ("WALLET_UNVERIFIED_INQUIRY_PERIOD_SECONDS", "0"),
    ],
)
def test_bounds_that_bound_nothing_are_config_errors(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load({variable: value})


def test_the_defaults_fit_a_descriptor_limit_of_4096() -> None:
    config = Config()
    assert descriptors.needed(config) == 1000 + 1024 + descriptors.RESERVED
    descriptors.check_budget(config, 4096)


def test_a_cap_that_leaves_no_room_for_the_rest_is_refused_naming_the_variable() -> None:
    config = Config(http_max_connections=18_000)

    with pytest.raises(ConfigError, match="WALLET_HTTP_MAX_CONNECTIONS") as refused:
        descriptors.check_budget(config, 20_000)

    assert "= 20048, more than this process may open (20000" in str(refused.value)
    descriptors.check_budget(Config(http_max_connections=17_952), 20_000)  # exactly fits


def test_start_up_raises_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))

        assert descriptors.raise_open_file_limit(0) == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_serve_exits_with_code_2_when_the_descriptors_do_not_suffice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no finite open-file limit to exceed")
    monkeypatch.setenv("WALLET_HTTP_MAX_CONNECTIONS", str(hard))
    monkeypatch.setenv("WALLET_DB_PATH", str(tmp_path / "wallet.db"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(["serve"]) == 2
    finally:  # main() sets up the service's logging on the root logger
        root.handlers[:] = handlers
        root.setLevel(level)

    assert "configuration error: WALLET_HTTP_MAX_CONNECTIONS" in capsys.readouterr().err
    assert not (tmp_path / "wallet.db").exists(), "refused before anything was opened"

"""What the process does once the service is up (python -m wallet_service)."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

import pytest

from wallet_service.__main__ import main
from wallet_service.gc_policy import FULL_COLLECTION_EVERY, settle_collector


def test_start_up_objects_are_frozen_and_full_collections_are_rarer() -> None:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        settle_collector()  # what python -m wallet_service calls once the service is up

        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (thresholds[0], thresholds[1], FULL_COLLECTION_EVERY)
        assert thresholds[2] < FULL_COLLECTION_EVERY
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_one_caller_name_with_two_sets_of_roles_stops_the_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.startswith("WALLET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(
        "WALLET_CALLER_TOKENS", "dispatch:dispatch:first-token-1;dispatch:admin:second-token-2"
    )
    monkeypatch.setenv("WALLET_SANDBOX_LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("WALLET_DB_PATH", str(tmp_path / "wallet.db"))
    with socket.socket() as taken:
        # Were the configuration accepted, the start would fail on this port (exit
        # code 1) rather than serve.
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("WALLET_GRPC_LISTEN", f"127.0.0.1:{taken.getsockname()[1]}")

        assert main(["serve"]) == 2

    error = capsys.readouterr().err
    assert "WALLET_CALLER_TOKENS" in error
    assert "caller dispatch" in error
    assert "first-token-1" not in error
    assert "second-token-2" not in error


def test_a_kaspro_timeout_not_below_the_reconcile_grace_stops_the_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("WALLET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WALLET_KASPRO_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("WALLET_RECONCILE_GRACE_SECONDS", "20")

    assert main(["serve"]) == 2

    error = capsys.readouterr().err
    assert "WALLET_KASPRO_TIMEOUT_SECONDS" in error
    assert "WALLET_RECONCILE_GRACE_SECONDS" in error

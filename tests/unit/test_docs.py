"""The README's configuration table names every WALLET_* variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from wallet_service import config

ROOT = Path(__file__).resolve().parents[2]


def _variables(text: str) -> set[str]:
    return set(re.findall(r"WALLET_[A-Z_]+[A-Z]", text))


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    code = _variables((ROOT / "wallet_service" / "config.py").read_text())
    # The KasPro credentials are read in a loop: f"WALLET_KASPRO_{key.upper()}".
    code.discard("WALLET_KASPRO")
    code |= {f"WALLET_KASPRO_{key.upper()}" for key in config._DEV_KASPRO}
    readme = _variables((ROOT / "README.md").read_text())
    assert code, "config.py reads no WALLET_* variable?"
    assert code - readme == set(), "settings missing from the README's table"
    assert readme - code == set(), "the README documents settings the code does not read"

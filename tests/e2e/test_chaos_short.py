"""`make chaos` on a short seed: the sandbox and the service as processes, faults, a SIGKILL,
and the auditor's invariants (docs/reliability.md). Part of `make test`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
INVARIANTS = (
    "once",
    "known",
    "balances",
    "ledger",
    "settled",
    "events",
    "crash",
    "answers",
    "drift",
)


def test_short_seed_keeps_every_invariant(tmp_path: Path) -> None:
    # --final-wait 0: operations left without an answer are not asked about again;
    # the auditor still checks what became of them.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos",
            "--seed",
            "1",
            "--ops",
            "150",
            "--kills",
            "1",
            "--final-wait",
            "0",
            "--settle-timeout",
            "120",
            "--results",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    table = done.stdout
    results = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(\w+)\s+(OK|FAIL)\s+\d+\s", table, flags=re.MULTILINE)
    }
    assert set(INVARIANTS) <= set(results), f"no invariant table:\n{table}\n{done.stderr[-3000:]}"
    assert re.search(r"^kills\s+1 SIGKILLs", table, flags=re.MULTILINE), table
    failed = [name for name in INVARIANTS if results[name] != "OK"]
    assert not failed, f"invariants violated: {failed}\n{table}"
    assert done.returncode == 0, f"{table}\n{done.stderr[-3000:]}"
    assert "RESULT OK" in table
    assert (tmp_path / "latest.json").exists()

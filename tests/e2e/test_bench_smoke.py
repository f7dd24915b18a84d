"""`make bench` keeps working: a one-second run of the ceiling, of KasPro direct and of
GetAccount through the service prints the table and the guards and writes latest.json
with every figure the docs quote; the latency-bound scenario runs too. It asserts what
was measured (calls made, no errors, CPU accounted), never how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def short_bench(results: Path, *scenarios: str) -> subprocess.CompletedProcess[str]:
    """One second of each scenario, 4 callers, results in ``results``."""
    short = ["--quick", "--duration", "1", "--concurrency", "4"]
    return subprocess.run(
        [sys.executable, "-m", "bench", *short, "--only", *scenarios, "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_short_bench_prints_the_table_and_writes_the_results(tmp_path: Path) -> None:
    done = short_bench(tmp_path, "ceiling", "kaspro_direct", "get_account")

    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert {"scenario", "ceiling", "kaspro_direct", "get_account"} <= rows.keys()
    assert "cores busy" in done.stdout
    report = json.loads((tmp_path / "latest.json").read_text())
    for name in ("ceiling", "get_account"):
        result = report["results"][name]
        assert result["calls"] > 0, name
        assert result["errors"] == {}, name
        assert result["generator_cpu_s_per_1000"] > 0, name
        assert result["warmup_calls"] > 0, name  # a warm-up ran and was kept apart
    assert report["results"]["ceiling"]["echo_cpu_s_per_1000"] > 0
    service = report["results"]["get_account"]
    assert service["service_cpu_s_per_1000"] > 0
    assert service["sandbox_cpu_s_per_1000"] > 0
    assert 0 < service["startup_s"] < 60
    # Every guard is reported; those whose scenarios did not run say so.
    guards = {c["guard"]: c for c in report["guards"]}
    assert guards["GetAccount / ceiling ≥ 0.2"]["value"] > 0
    assert guards["replay / ceiling ≥ 0.4"]["met"] is None
    assert "guard GetAccount / ceiling ≥ 0.2: " in done.stdout
    assert "guard replay / ceiling ≥ 0.4 not measured" in done.stdout


def test_the_latency_bound_scenario_has_kaspro_answer_every_call_late(tmp_path: Path) -> None:
    # The sandbox answers every call 200 ms late once the customers are prepared: every
    # measured call waited at least that long (a floor set by the delay, not a speed).
    done = short_bench(tmp_path, "latency_bound")

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "latest.json").read_text())["results"]["latency_bound"]
    assert result["calls"] > 0
    assert result["errors"] == {}
    assert result["p50_ms"] >= 200
    assert result["service_cpu_s_per_1000"] > 0

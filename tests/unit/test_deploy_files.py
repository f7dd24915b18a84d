"""deploy/: the Prometheus alert rules and the Grafana dashboard parse, and every metric
their expressions name is one a running service exports; each alert has its runbook
line in docs/operations.md."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
import yaml
from metric_labels import families

from wallet_service.config import Config
from wallet_service.server import start

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "wallet-service.json"
OPERATIONS = ROOT / "docs" / "operations.md"

# What Prometheus itself records of each scrape target.
PROMETHEUS_SERIES = frozenset({"up"})
# Words of PromQL that are neither functions (followed by "(") nor metrics.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right"}
)
# The series names each type of family writes (prometheus-client, text format 0.0.4).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    text = re.sub(r"\b\d[\w.]*", "", text)  # numbers and durations (0.95, 1h)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for word in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[word.end() :].lstrip().startswith("(") or word.group() in KEYWORDS:
            continue  # a function or aggregation, or an operator
        names.add(word.group())
    return names


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard."""
    document = json.loads(DASHBOARD.read_text())
    for panel in document["panels"]:
        for target in panel.get("targets", ()):
            yield panel["title"], target["expr"]


@pytest_asyncio.fixture
async def exported(tmp_path: Path) -> AsyncIterator[set[str]]:
    """The series names a running service's /metrics may show."""
    service = await start(
        Config(
            grpc_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            sandbox_listen="127.0.0.1:0",
            db_path=str(tmp_path / "wallet.db"),
        )
    )
    try:
        async with httpx.AsyncClient() as client:
            page = await client.get(f"http://127.0.0.1:{service.http_port}/metrics")
    finally:
        await service.stop(0)
    yield {
        family.name + suffix
        for family in families(page.text).values()
        for suffix in SUFFIXES[family.type]
    }


def test_the_expression_reader_finds_metrics_and_skips_the_rest() -> None:
    expression = (
        "histogram_quantile(0.95, sum by (le, endpoint) "
        '(rate(wallet_kaspro_call_seconds_bucket{endpoint!="x"}[5m])))'
        " / on(instance) group_left sum without (code) (up offset 1h) > bool 2 and wallet_nope"
    )

    assert metric_names(expression) == {"wallet_kaspro_call_seconds_bucket", "up", "wallet_nope"}


def test_the_alerts_parse_and_name_only_exported_metrics(exported: set[str]) -> None:
    rules = alert_rules()
    used = {rule["alert"]: metric_names(rule["expr"]) for rule in rules}

    unknown = {
        alert: names - exported - PROMETHEUS_SERIES
        for alert, names in used.items()
        if names - exported - PROMETHEUS_SERIES
    }
    assert unknown == {}
    # What issue 16 asks to be woken for.
    everything = set().union(*used.values())
    for name in (
        "up",
        "wallet_serving",
        "wallet_unresolved_attempts_overdue",
        "wallet_kaspro_calls_total",
        "wallet_kaspro_call_seconds_bucket",
        "wallet_callbacks_total",
        "wallet_frozen_operations",
        "wallet_drifts_open",
    ):
        assert name in everything, name
    for rule in rules:
        assert set(rule["annotations"]) >= {"summary", "runbook"}, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]


def test_each_alert_has_its_runbook_line() -> None:
    operations = OPERATIONS.read_text()
    section = operations[operations.index("## Metrics and alerts") :]

    for rule in alert_rules():
        assert f"`{rule['alert']}`" in section, rule["alert"]


def test_the_dashboard_parses_and_names_only_exported_metrics(exported: set[str]) -> None:
    queries = list(dashboard_expressions())

    unknown = [
        (title, sorted(metric_names(expression) - exported - PROMETHEUS_SERIES))
        for title, expression in queries
        if metric_names(expression) - exported - PROMETHEUS_SERIES
    ]
    assert unknown == []
    # Every family the service exports is on a panel.
    shown = set().union(*(metric_names(expression) for _, expression in queries))
    bases = {re.sub(r"_(total|bucket|sum|count|created)$", "", name) for name in shown}
    missing = {
        name
        for name in exported
        if not name.endswith("_created")
        and re.sub(r"_(total|bucket|sum|count)$", "", name) not in bases
    }
    assert missing <= {
        # The callback port's hardening counters: docs/operations.md, "The callback port".
        "wallet_http_connections_timed_out_total",
        "wallet_unverified_callback_samples_dropped_total",
        "wallet_top_up_checks_dropped_total",
    }

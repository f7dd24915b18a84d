"""Reading `/metrics` text in tests: its families, a sample's value, and the label values
that look like a person's or an operation's identity (none may: bounded cardinality)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# A mobile number, VA or account number (7+ digits in a row, whatever the separators),
# a KasPro requestId or uuid (12+ hex characters), or one of our ids (txn_…, ride:…,
# topup:…; lower case: RIDE_HOLD is a type).
_SUSPICIOUS = re.compile(r"(\d[\s.+-]?){7,}|(?i:[0-9a-f]{12,})|\btxn_|\bride:|\btopup:")


# Every family issue 16 asks for (docs/operations.md, "Metrics and alerts").
FAMILIES = (
    "wallet_grpc_calls",
    "wallet_grpc_call_seconds",
    "wallet_grpc_calls_in_flight",
    "wallet_grpc_refused",
    "wallet_kaspro_calls",
    "wallet_kaspro_call_seconds",
    "wallet_kaspro_token_refreshes",
    "wallet_kaspro_status_inquiries",
    "wallet_kaspro_resends",
    "wallet_operations",
    "wallet_idempotent_replays",
    "wallet_unresolved_attempts",
    "wallet_oldest_unresolved_attempt_seconds",
    "wallet_unresolved_attempts_overdue",
    "wallet_frozen_operations",
    "wallet_holds_open",
    "wallet_holds_escrow_idr",
    "wallet_drifts_open",
    "wallet_serving",
    "wallet_callbacks",
    "wallet_otp_sent",
    "wallet_otp_rate_limited",
    "wallet_otp_wrong_guesses",
    "wallet_otp_lockouts",
    "wallet_event_watchers",
    "wallet_event_lag_seconds",
    "wallet_db_transaction_seconds",
    "wallet_db_connections_in_use",
    "wallet_db_transaction_retries",
)


def families(text: str) -> dict[str, Metric]:
    """The exposition's families by name (counters without their ``_total``)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict[str, Metric], family: str, sample: str = "", **labels: str) -> float:
    """The sum of ``family``'s samples named ``sample`` (default: the family's own name,
    ``_total`` for a counter) whose labels include ``labels``."""
    metric = found[family]
    name = sample or (family + "_total" if metric.type == "counter" else family)
    return sum(
        s.value
        for s in metric.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def label_values(found: Iterable[Metric]) -> set[tuple[str, str, str]]:
    """(sample name, label, value) of every labelled sample; ``le`` bounds excluded."""
    return {
        (sample.name, label, text)
        for family in found
        for sample in family.samples
        for label, text in sample.labels.items()
        if label != "le"
    }


def suspicious_labels(found: Iterable[Metric], *known: str) -> list[tuple[str, str, str]]:
    """The label values that look like an identity, or equal one of ``known`` (the
    numbers, ids and references a test used)."""
    return sorted(
        (name, label, text)
        for name, label, text in label_values(found)
        if _SUSPICIOUS.search(text) or any(k and k in text for k in known)
    )

"""Bounded cardinality: the series a service creates up front carry no identity in their
labels, every KasPro path has a metric name, and the check itself catches identities."""

from __future__ import annotations

import pytest
from metric_labels import families, suspicious_labels

from wallet_service.api.call_metrics import CallMetricsInterceptor
from wallet_service.kaspro import KasProClient, KasProSettings, endpoints
from wallet_service.metrics import Metrics
from wallet_service.server import METERED_METHODS


def settings() -> KasProSettings:
    return KasProSettings(
        base_url="http://kaspro.invalid",
        client_id="client",
        client_secret="secret",
        hmac_key="key",
        hmac_secret="hmac-secret",
        timeout_seconds=5.0,
        ekyc_timeout_seconds=30.0,
        max_connections=4,
    )


async def test_the_series_created_up_front_carry_no_identity() -> None:
    metrics = Metrics()
    CallMetricsInterceptor(metrics, METERED_METHODS)
    async with KasProClient(settings(), metrics=metrics):
        found = families(metrics.exposition().decode())

    assert suspicious_labels(found.values()) == []
    # Every gRPC method of ours, every KasPro endpoint and every final status is there.
    labelled = {
        (sample.labels.get("method"), sample.labels.get("endpoint"))
        for family in found.values()
        for sample in family.samples
    }
    assert ("CaptureRidePayment", None) in labelled
    assert ("WatchEvents", None) in labelled
    assert (None, "transaction_status") in labelled


def test_every_kaspro_path_has_a_metric_name() -> None:
    paths = {
        value
        for name, value in vars(endpoints).items()
        if name.endswith("_PATH") and isinstance(value, str)
    }

    assert paths == set(endpoints.ENDPOINT_NAMES)
    assert len(set(endpoints.ENDPOINT_NAMES.values())) == len(paths)  # names are distinct


@pytest.mark.parametrize(
    "identity",
    [
        "081234567890",
        "+62 812-3456-7890",
        "6281234567890",
        "txn_3f9a",
        "ride:r-9",
        "1f0c9ab2c3d4e5",
    ],
)
def test_the_check_catches_an_identity_in_a_label(identity: str) -> None:
    metrics = Metrics()
    metrics.kaspro_calls.labels(identity, "timeout").inc()

    found = families(metrics.exposition().decode())

    assert {(label, text) for _, label, text in suspicious_labels(found.values())} == {
        ("endpoint", identity)
    }


def test_the_check_catches_a_value_the_test_used() -> None:
    metrics = Metrics()
    metrics.kaspro_resends.labels("auth-1").inc()

    found = families(metrics.exposition().decode())

    assert {text for _, _, text in suspicious_labels(found.values(), "auth-1")} == {"auth-1"}

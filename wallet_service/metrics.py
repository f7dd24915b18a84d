"""The service's Prometheus metrics, served on ``/metrics`` of the HTTP port.

Each running service has a registry of its own rather than prometheus-client's global
one: the tests start many services in one process (docs/decisions/0002-prometheus-client.md).
Labels never carry mobile numbers, references or ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

# What generate_latest writes: Prometheus' classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.unresolved_attempts = Gauge(
            "wallet_unresolved_attempts",
            "KasPro money calls whose outcome is not final.",
            registry=r,
        )
        self.oldest_unresolved_attempt = Gauge(
            "wallet_oldest_unresolved_attempt_seconds",
            "Age of the oldest of them.",
            registry=r,
        )
        self.unresolved_attempts_overdue = Gauge(
            "wallet_unresolved_attempts_overdue",
            "1 when the oldest is past its deadline.",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

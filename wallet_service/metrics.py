"""The service's Prometheus metrics, served on ``/metrics`` of the HTTP port.

Each running service has a registry of its own rather than prometheus-client's global
one: the tests start many services in one process (docs/decisions/0002-prometheus-client.md).
Labels never carry mobile numbers, references or ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

# What generate_latest writes: Prometheus' classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What was done with one POST to the callback port: the callbacks table's own words for
# a verified callback, then the deliveries that never got that far.
VERDICTS = (
    "applied",
    "duplicate",
    "ignored",
    "frozen",
    "parked",
    "rejected",
    "unverified",
    "malformed",
    "too_large",
    "hung_up",
)
# Why the HTTP port closed a connection on its own: the request head or body did not
# arrive in time, or a kept-alive connection stayed idle.
TIMEOUT_PHASES = ("head", "body", "keep_alive")


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
        self.frozen_operations = Gauge(
            "wallet_frozen_operations",
            "Operations frozen for review (each needs a person).",
            registry=r,
        )
        self.callbacks = Counter(
            "wallet_callbacks",
            "POSTs to the callback port, by what was done with them.",
            ["verdict"],
            registry=r,
        )
        self.http_connections = Gauge(
            "wallet_http_connections",
            "Connections open on the HTTP port.",
            registry=r,
        )
        self.http_refused = Counter(
            "wallet_http_connections_refused",
            "HTTP-port connections closed at once because the port had its cap.",
            registry=r,
        )
        self.http_timed_out = Counter(
            "wallet_http_connections_timed_out",
            "HTTP-port connections closed by a timeout, by phase.",
            ["phase"],
            registry=r,
        )
        self.unverified_samples_dropped = Counter(
            "wallet_unverified_callback_samples_dropped",
            "Unverified callbacks pushed out of the kept sample by newer ones.",
            registry=r,
        )
        self.top_up_checks_dropped = Counter(
            "wallet_top_up_checks_dropped",
            "Unverified top-up callbacks whose reference was not queued for a KasPro "
            "status inquiry because too many were on record.",
            registry=r,
        )
        # Every series exists from the start, so that a rate() sees its first increment.
        for verdict in VERDICTS:
            self.callbacks.labels(verdict)
        for phase in TIMEOUT_PHASES:
            self.http_timed_out.labels(phase)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""The service's Prometheus metrics, served on ``/metrics`` of the HTTP port.

Each running service has a registry of its own rather than prometheus-client's global
one: the tests start many services in one process (docs/decisions/0002-prometheus-client.md).
Labels never carry mobile numbers, request ids, ride ids or references: every label
value comes from a fixed vocabulary (a gRPC method, a KasPro endpoint, a status), and
every series whose labels are known in advance exists from the start, so that a rate()
sees its first increment. The families are listed in docs/operations.md, "Metrics and
alerts"; the gauges marked "shared" there are facts of the shared database, read when
``/metrics`` is scraped: every replica reports the same figure.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from wallet_service.domain.money import TxType
from wallet_service.store.database import Database, Observer

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
# The limits a call is refused for with OVERLOADED (api/edge.py names them in ErrorInfo).
OVERLOAD_LIMITS = ("concurrent_rpcs", "watch_streams", "watch_streams_per_caller")
# How an operation (a transaction) ended: the final statuses the engine moves one to.
FINAL_STATUSES = ("SUCCEEDED", "FAILED")
# Why a KasPro request went out a second time: the gateway refused our token (the client
# sends it again with a fresh one), or a status inquiry said KasPro never executed it
# (the engine sends the same step again, same reference).
RESEND_REASONS = ("token_refused", "not_found")
# Why the client fetched a token: the one it had was missing or near expiry, or refused.
TOKEN_REASONS = ("due", "refused")
# Why a PostgreSQL transaction body ran again (store/postgres.py).
DB_RETRY_CAUSES = ("conflict", "unique_key", "connection_lost")

# Buckets (docs/decisions/0002-prometheus-client.md, "Buckets"): from a fast read to the
# longest a caller waits; KasPro's reach its timeouts (5 s; eKYC 30 s).
GRPC_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KASPRO_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
EVENT_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 60.0, 300.0)

SHARED = " Shared: read from the database at scrape, every replica reports the same figure."


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        # gRPC (api/call_metrics.py).
        self.grpc_calls = Counter(
            "wallet_grpc_calls",
            "gRPC calls finished, by service, method and status code.",
            ["service", "method", "code"],
            registry=r,
        )
        self.grpc_call_seconds = Histogram(
            "wallet_grpc_call_seconds",
            "How long unary gRPC calls took, by service and method.",
            ["service", "method"],
            buckets=GRPC_BUCKETS,
            registry=r,
        )
        self.grpc_in_flight = Gauge(
            "wallet_grpc_calls_in_flight",
            "gRPC calls running now (streams while open), by service and method.",
            ["service", "method"],
            registry=r,
        )
        self.grpc_refused = Counter(
            "wallet_grpc_refused",
            "gRPC calls refused with OVERLOADED, by the limit they met.",
            ["limit"],
            registry=r,
        )

        # KasPro (kaspro/client.py).
        self.kaspro_calls = Counter(
            "wallet_kaspro_calls",
            "HTTP exchanges with KasPro, by endpoint and outcome (the KasPro code's class, "
            "the HTTP status class when there is no code, timeout, connection_error).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.kaspro_call_seconds = Histogram(
            "wallet_kaspro_call_seconds",
            "How long HTTP exchanges with KasPro took, by endpoint.",
            ["endpoint"],
            buckets=KASPRO_BUCKETS,
            registry=r,
        )
        self.kaspro_token_refreshes = Counter(
            "wallet_kaspro_token_refreshes",
            "Access tokens fetched, by why (due: none or near expiry; refused by the gateway).",
            ["reason"],
            registry=r,
        )
        self.kaspro_status_inquiries = Counter(
            "wallet_kaspro_status_inquiries",
            "Transaction status inquiries, by what KasPro said of the transfer.",
            ["state"],
            registry=r,
        )
        self.kaspro_resends = Counter(
            "wallet_kaspro_resends",
            "KasPro requests sent again, by why (same reference each time).",
            ["reason"],
            registry=r,
        )

        # Money.
        self.operations = Counter(
            "wallet_operations",
            "Operations (transactions) that reached a final status, by type and status.",
            ["type", "status"],
            registry=r,
        )
        self.idempotent_replays = Counter(
            "wallet_idempotent_replays",
            "Mutating calls answered from what their request_id decided before.",
            registry=r,
        )
        self.unresolved_attempts = Gauge(
            "wallet_unresolved_attempts",
            "KasPro money calls whose outcome is not final." + SHARED,
            registry=r,
        )
        self.oldest_unresolved_attempt = Gauge(
            "wallet_oldest_unresolved_attempt_seconds",
            "Age of the oldest of them." + SHARED,
            registry=r,
        )
        self.unresolved_attempts_overdue = Gauge(
            "wallet_unresolved_attempts_overdue",
            "1 when the oldest is past its deadline (WALLET_RECONCILE_OVERDUE_SECONDS)." + SHARED,
            registry=r,
        )
        self.frozen_operations = Gauge(
            "wallet_frozen_operations",
            "Operations frozen for review (each needs a person)." + SHARED,
            registry=r,
        )
        self.holds_open = Gauge(
            "wallet_holds_open",
            "Ride payments whose hold is in escrow (authorized, capturing, voiding)." + SHARED,
            registry=r,
        )
        self.holds_escrow = Gauge(
            "wallet_holds_escrow_idr",
            "Rupiah those holds put in escrow." + SHARED,
            registry=r,
        )
        self.drifts_open = Gauge(
            "wallet_drifts_open",
            "Drifts open: an account whose balance elsewhere differs from our ledger." + SHARED,
            registry=r,
        )
        self.serving = Gauge(
            "wallet_serving",
            "1 while this replica's gRPC health is SERVING, 0 while NOT_SERVING.",
            registry=r,
        )

        # Callbacks and the HTTP port (http.py, http_protocol.py, flows/callbacks.py).
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

        # OTP (flows/onboarding.py).
        self.otp_sent = Counter("wallet_otp_sent", "OTPs KasPro sent at our request.", registry=r)
        self.otp_rate_limited = Counter(
            "wallet_otp_rate_limited",
            "OTP requests refused by the resend cooldown or the hourly cap.",
            registry=r,
        )
        self.otp_wrong_guesses = Counter(
            "wallet_otp_wrong_guesses", "OTPs KasPro said were wrong.", registry=r
        )
        self.otp_lockouts = Counter(
            "wallet_otp_lockouts", "Wallets locked after too many wrong OTPs.", registry=r
        )

        # Events (api/transaction.py).
        self.event_watchers = Gauge(
            "wallet_event_watchers", "WatchEvents streams open on this replica.", registry=r
        )
        self.event_lag = Histogram(
            "wallet_event_lag_seconds",
            "From an event's occurred_at to its sending to a watcher.",
            buckets=EVENT_LAG_BUCKETS,
            registry=r,
        )

        # Database (store/sqlite.py, store/postgres.py).
        self.db_transaction_seconds = Histogram(
            "wallet_db_transaction_seconds",
            "How long a committed database transaction took, waits and retries included.",
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.db_connections_in_use = Gauge(
            "wallet_db_connections_in_use",
            "Database connections of this replica in use (SQLite: its one connection).",
            registry=r,
        )
        self.db_retries = Counter(
            "wallet_db_transaction_retries",
            "Transaction bodies run again on PostgreSQL, by cause (conflict: a "
            "serialization failure or deadlock).",
            ["cause"],
            registry=r,
        )

        for verdict in VERDICTS:
            self.callbacks.labels(verdict)
        for phase in TIMEOUT_PHASES:
            self.http_timed_out.labels(phase)
        for limit in OVERLOAD_LIMITS:
            self.grpc_refused.labels(limit)
        for type_ in TxType:
            for status in FINAL_STATUSES:
                self.operations.labels(type_.value, status)
        for reason in RESEND_REASONS:
            self.kaspro_resends.labels(reason)
        for reason in TOKEN_REASONS:
            self.kaspro_token_refreshes.labels(reason)
        for cause in DB_RETRY_CAUSES:
            self.db_retries.labels(cause)

    def known_methods(self, methods: Iterable[str], codes: Iterable[str]) -> None:
        """Create the series of each gRPC method (``/package.Service/Method``) and code."""
        every_code = tuple(codes)
        for full_name in methods:
            service, method = split_method(full_name)
            self.grpc_in_flight.labels(service, method)
            self.grpc_call_seconds.labels(service, method)
            for code in every_code:
                self.grpc_calls.labels(service, method, code)

    def known_kaspro(self, endpoints: Iterable[str], outcomes: Iterable[str]) -> None:
        """Create the series of each KasPro endpoint and outcome."""
        every_outcome = tuple(outcomes)
        for endpoint in endpoints:
            self.kaspro_call_seconds.labels(endpoint)
            for outcome in every_outcome:
                self.kaspro_calls.labels(endpoint, outcome)

    def known_inquiry_states(self, states: Iterable[str]) -> None:
        for state in states:
            self.kaspro_status_inquiries.labels(state)

    def watch_database(self, db: Database) -> None:
        """Have ``db`` report its transactions here, and its connections at scrape."""
        db.observer = _DatabaseMetrics(self)
        self.db_connections_in_use.set_function(db.connections_in_use)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def split_method(full_name: str) -> tuple[str, str]:
    """("wallet.v1.PaymentService", "CaptureRidePayment") of "/wallet.v1.PaymentService/…"."""
    service, _, method = full_name.lstrip("/").partition("/")
    return service, method


class _DatabaseMetrics(Observer):
    def __init__(self, metrics: Metrics) -> None:
        self._seconds = metrics.db_transaction_seconds
        self._retries = metrics.db_retries

    def transaction_ended(self, seconds: float) -> None:
        self._seconds.observe(seconds)

    def retried(self, cause: str) -> None:
        self._retries.labels(cause).inc()

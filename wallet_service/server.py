"""Assembly of the service, step by step: database, KasPro client, gRPC server with its
services, HTTP port, workers; and its graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from wallet.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    funding_service_pb2,
    funding_service_pb2_grpc,
    payment_service_pb2,
    payment_service_pb2_grpc,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)

from wallet_service import descriptors
from wallet_service.api.account import AccountServicer, reduce_stored_answers
from wallet_service.api.admin import AdminServicer
from wallet_service.api.auth import Authenticator
from wallet_service.api.call_metrics import CallMetricsInterceptor
from wallet_service.api.edge import EdgeInterceptor
from wallet_service.api.funding import FundingServicer
from wallet_service.api.payment import PaymentServicer
from wallet_service.api.transaction import TransactionServicer
from wallet_service.config import Config
from wallet_service.flows.admin import Admin
from wallet_service.flows.callbacks import CallbackReceiver
from wallet_service.flows.engine import Engine, Timing
from wallet_service.flows.external import ExternalPayments
from wallet_service.flows.funding import Funding
from wallet_service.flows.history import History
from wallet_service.flows.idempotency import Idempotency
from wallet_service.flows.onboarding import Onboarding
from wallet_service.flows.operations import Operations, PlatformAccounts
from wallet_service.flows.rides import RidePayments
from wallet_service.flows.top_ups import TopUps
from wallet_service.flows.transfers import Transfers
from wallet_service.http import CALLBACK_PATH, start_http
from wallet_service.http import create_app as create_http_app
from wallet_service.kaspro import KasProClient
from wallet_service.metrics import Metrics
from wallet_service.store.database import Database
from wallet_service.workers.drift import DriftCheck
from wallet_service.workers.housekeeping import run_housekeeping
from wallet_service.workers.reconciler import Reconciler

if TYPE_CHECKING:
    from kaspro_sandbox import RunningSandbox

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    account_service_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    funding_service_pb2.DESCRIPTOR.services_by_name["FundingService"].full_name,
    payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
# The methods the call metrics count (their series exist from the start).
METERED_METHODS = tuple(
    f"/{service.full_name}/{method.name}"
    for service in (
        account_service_pb2.DESCRIPTOR.services_by_name["AccountService"],
        funding_service_pb2.DESCRIPTOR.services_by_name["FundingService"],
        payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"],
        transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    )
    for method in service.methods
)


@dataclass
class WalletService:
    """A running service; ``stop()`` shuts it down gracefully."""

    config: Config
    port: int
    http_port: int
    kaspro_base_url: str
    _server: grpc.aio.Server
    _health: health.aio.HealthServicer
    _serving: asyncio.Event
    db: Database
    reconciler: Reconciler
    metrics: Metrics
    drift_check: DriftCheck
    # Closes what start opened, the newest first: the workers, the HTTP port, the
    # KasPro client, the embedded sandbox, the database.
    _resources: contextlib.AsyncExitStack
    _stopped: bool = False

    @property
    def address(self) -> str:
        return f"{self.config.grpc_listen.rsplit(':', 1)[0]}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight calls finish within the grace period, close all."""
        if self._stopped:
            return
        self._stopped = True
        self._serving.clear()
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.config.grace_period_seconds if grace is None else grace)
        await self._resources.aclose()
        log.info("wallet service stopped")

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def start(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    kaspro_base_url: str | None = None,
) -> WalletService:
    """Start everything ``config`` describes; the embedded sandbox too, unless a URL is given.

    What is opened is closed again if a later step fails (a port in use, say).
    """
    descriptors.reserve(config)  # before anything is opened: a misfit is a ConfigError
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as resources:
        db = await Database.open(config.database, pool_size=config.db_pool_size)
        resources.push_async_callback(db.close)
        metrics.watch_database(db)
        sandbox = None
        if kaspro_base_url is None and config.embedded_sandbox:
            sandbox = await _start_sandbox(config)
            resources.push_async_callback(sandbox.stop)
        base_url = sandbox.base_url if sandbox else kaspro_base_url or config.kaspro_base_url
        kaspro = KasProClient(config.kaspro_settings(base_url), clock=clock, metrics=metrics)
        resources.push_async_callback(kaspro.aclose)
        server, health_servicer = _grpc_server(config, metrics)
        engine, rides, idempotency = await _add_services(server, config, db, kaspro, clock, metrics)
        receiver = CallbackReceiver(engine, TopUps(engine), kaspro, config, clock, metrics)
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(Admin(engine, idempotency, receiver), clock), server
        )
        reconciler = Reconciler(
            engine,
            rides,
            receiver.retry_parked,
            interval_seconds=config.reconcile_interval_seconds,
            inquiry_timeout_seconds=config.kaspro_timeout_seconds,
            overdue_after_seconds=config.reconcile_overdue_seconds,
        )
        drift_check = DriftCheck.configured(db, kaspro, clock, config)
        serving = asyncio.Event()  # set while serving; /healthz reads it
        reachable = asyncio.Event()  # set while the database answers
        reachable.set()
        app = create_http_app(
            receiver, reconciler, lambda: serving.is_set() and reachable.is_set(), metrics
        )
        http = await start_http(app, config, metrics)
        resources.push_async_callback(http.stop)
        if sandbox is not None:
            # The embedded sandbox tells its callbacks to our receiver.
            sandbox.state.callback_url = f"http://127.0.0.1:{http.port}{CALLBACK_PATH}"
        # The gRPC port last: grpc holds a port it was given until its server has run.
        port = _listen(server, config)
        await server.start()
        resources.push_async_callback(server.stop, None)
        serving.set()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        _start_workers(resources, reconciler, db, clock, config)
        if config.drift_check_enabled:
            resources.push_async_callback(
                _cancel, asyncio.create_task(drift_check.run_forever(), name="drift-check")
            )
        resources.push_async_callback(
            _cancel,
            asyncio.create_task(
                _watch_database(db, health_servicer, reachable), name="database-health"
            ),
        )
        log.info(
            "wallet service serving on port %d, %s (KasPro at %s)",
            port,
            _transport(config),
            base_url,
        )
        return WalletService(
            config=config,
            port=port,
            http_port=http.port,
            kaspro_base_url=base_url,
            _server=server,
            _health=health_servicer,
            _serving=serving,
            db=db,
            reconciler=reconciler,
            metrics=metrics,
            drift_check=drift_check,
            _resources=resources.pop_all(),
        )


async def _start_sandbox(config: Config) -> RunningSandbox:
    """The KasPro sandbox in this process, knowing the service's KasPro credentials."""
    from kaspro_sandbox.config import SandboxConfig
    from kaspro_sandbox.runner import start_sandbox

    host, port = config.sandbox_listen.rsplit(":", 1)
    return await start_sandbox(
        SandboxConfig(
            client_id=config.kaspro_client_id,
            client_secret=config.kaspro_client_secret,
            hmac_key=config.kaspro_hmac_key,
            hmac_secret=config.kaspro_hmac_secret,
            callback_secret=config.kaspro_callback_secret,
            escrow_account=config.kaspro_escrow_account,
            merchant_account=config.kaspro_merchant_account,
            corporate_account=config.kaspro_corporate_account,
        ),
        host=host,
        port=int(port),
    )


def _grpc_server(
    config: Config, metrics: Metrics
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The gRPC server behind the call metrics and the edge interceptor, with health and
    reflection."""
    authenticator = Authenticator(
        config.callers, config.tls.client_callers if config.tls is not None else None
    )
    edge = EdgeInterceptor(
        authenticator,
        config.max_concurrent_rpcs,
        min_money_deadline_seconds=config.min_money_deadline_seconds,
        max_watch_streams=config.max_watch_streams,
        max_watch_streams_per_caller=config.max_watch_streams_per_caller,
    )
    server = grpc.aio.server(
        interceptors=[CallMetricsInterceptor(metrics, METERED_METHODS), edge],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # gRPC turns SO_REUSEPORT on by default: a second instance would then share
            # the port (and split calls between two SQLite writers) instead of failing.
            ("grpc.so_reuseport", 0),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer


async def _add_services(
    server: grpc.aio.Server,
    config: Config,
    db: Database,
    kaspro: KasProClient,
    clock: Callable[[], float],
    metrics: Metrics,
) -> tuple[Engine, RidePayments, Idempotency]:
    """The use cases, and the wallet's gRPC services over them on ``server``."""
    onboarding = Onboarding(db, kaspro, config.otp, clock, metrics=metrics)
    idempotency = Idempotency(db, clock, metrics=metrics)
    # Before any retry can be answered: no full KTP identity stays in the database.
    if reduced := await reduce_stored_answers(idempotency):
        log.info("reduced %d stored UpgradeKyc answers to what retries need", reduced)
    engine = Engine(
        db,
        kaspro,
        clock,
        Timing(unanswered_grace_seconds=config.reconcile_grace_seconds),
        metrics=metrics,
    )
    operations = Operations(
        engine,
        onboarding,
        idempotency,
        PlatformAccounts(
            escrow=config.kaspro_escrow_account, corporate=config.kaspro_corporate_account
        ),
        config.limits,
    )
    rides = RidePayments(operations)
    external = ExternalPayments(operations)
    funding = Funding(
        onboarding,
        va=config.va_prefixes,
        retail=config.retail_prefixes,
        driver_va=config.driver_va_prefixes,
        driver_retail=config.driver_retail_prefixes,
    )
    account_service_pb2_grpc.add_AccountServiceServicer_to_server(
        AccountServicer(onboarding, idempotency, config.max_image_bytes), server
    )
    funding_service_pb2_grpc.add_FundingServiceServicer_to_server(
        FundingServicer(funding, external, config.cash_out_banks), server
    )
    payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(
        PaymentServicer(rides, Transfers(operations), external), server
    )
    transaction_service_pb2_grpc.add_TransactionServiceServicer_to_server(
        TransactionServicer(operations, History(db), metrics), server
    )
    return engine, rides, idempotency


def _start_workers(
    resources: contextlib.AsyncExitStack,
    reconciler: Reconciler,
    db: Database,
    clock: Callable[[], float],
    config: Config,
) -> None:
    """The background loops, each cancelled when ``resources`` close."""
    ttl_seconds = config.idempotency_ttl_hours * 3600
    for name, work in (
        ("reconciler", reconciler.run_forever()),
        ("housekeeping", run_housekeeping(db, clock, idempotency_ttl_seconds=ttl_seconds)),
    ):
        resources.push_async_callback(_cancel, asyncio.create_task(work, name=name))


# How often each replica asks its database whether it answers (health).
DATABASE_CHECK_SECONDS = 2.0


async def _watch_database(
    db: Database, health_servicer: health.aio.HealthServicer, reachable: asyncio.Event
) -> None:
    """Report NOT_SERVING (gRPC health and /healthz) while the database does not answer,
    so that a balancer sends calls to a replica that can serve them; SERVING again once
    it answers."""
    while True:
        await asyncio.sleep(DATABASE_CHECK_SECONDS)
        answers = await db.healthy()
        if answers == reachable.is_set():
            continue
        status = health_pb2.HealthCheckResponse.SERVING
        if answers:
            reachable.set()
            log.warning("the database answers again: serving")
        else:
            reachable.clear()
            status = health_pb2.HealthCheckResponse.NOT_SERVING
            log.error("the database does not answer: NOT_SERVING until it does")
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, status)


def _listen(server: grpc.aio.Server, config: Config) -> int:
    """Add the gRPC port: TLS when a certificate is configured (mutual with a client CA)."""
    tls = config.tls
    try:
        if tls is None:
            return server.add_insecure_port(config.grpc_listen)
        credentials = grpc.ssl_server_credentials(
            [(tls.private_key, tls.certificate_chain)],
            root_certificates=tls.client_ca,
            require_client_auth=tls.mutual,
        )
        return server.add_secure_port(config.grpc_listen, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {config.grpc_listen}: {exc}") from exc


def _transport(config: Config) -> str:
    if config.tls is None:
        return "plaintext"
    if not config.tls.mutual:
        return "TLS"
    return f"mutual TLS ({len(config.tls.client_callers)} certificate callers)"


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(
    config: Config, *, on_started: Callable[[WalletService], None] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    service = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_started is not None:
        on_started(service)
    await stop.wait()
    log.info("stopping: finishing in-flight calls (grace %.0f s)", config.grace_period_seconds)
    await service.stop()

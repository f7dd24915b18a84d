"""Assembly of the service: database, KasPro client, gRPC server, health, reflection, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from wallet.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    funding_service_pb2,
    funding_service_pb2_grpc,
    payment_service_pb2,
    payment_service_pb2_grpc,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)

from wallet_service import descriptors
from wallet_service.api.account import AccountServicer, reduce_stored_answers
from wallet_service.api.auth import Authenticator
from wallet_service.api.edge import EdgeInterceptor
from wallet_service.api.funding import FundingServicer
from wallet_service.api.payment import PaymentServicer
from wallet_service.api.transaction import TransactionServicer
from wallet_service.config import Config
from wallet_service.flows.engine import Engine, Timing
from wallet_service.flows.external import ExternalPayments
from wallet_service.flows.funding import Funding
from wallet_service.flows.idempotency import Idempotency
from wallet_service.flows.onboarding import Onboarding
from wallet_service.flows.operations import Operations, PlatformAccounts
from wallet_service.flows.rides import RidePayments
from wallet_service.flows.top_ups import TopUps
from wallet_service.flows.transfers import Transfers
from wallet_service.http import CALLBACK_PATH, CallbackReceiver, CallbackSettings, start_http
from wallet_service.http import create_app as create_http_app
from wallet_service.kaspro import KasProClient
from wallet_service.metrics import Metrics
from wallet_service.store.database import Database
from wallet_service.workers.housekeeping import run_housekeeping
from wallet_service.workers.reconciler import Reconciler

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    account_service_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    funding_service_pb2.DESCRIPTOR.services_by_name["FundingService"].full_name,
    payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"].full_name,
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
    _db: Database
    _kaspro: KasProClient
    reconciler: Reconciler
    metrics: Metrics
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
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
        await self._kaspro.aclose()
        for close in reversed(self._closers):
            await close()
        await self._db.close()
        log.info("wallet service stopped")

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def start(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    kaspro_base_url: str | None = None,
) -> WalletService:
    """Start everything ``config`` describes; the embedded sandbox too, unless a URL is given."""
    descriptors.reserve(config)  # before anything is opened: a misfit is a ConfigError
    metrics = Metrics()
    closers: list[Callable[[], Awaitable[None]]] = []
    db = await Database.open(config.db_path)
    sandbox = None
    if kaspro_base_url is None and config.embedded_sandbox:
        from kaspro_sandbox.config import SandboxConfig
        from kaspro_sandbox.runner import start_sandbox

        host, sandbox_port = config.sandbox_listen.rsplit(":", 1)
        sandbox = await start_sandbox(
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
            port=int(sandbox_port),
        )
        closers.append(sandbox.stop)
        kaspro_base_url = sandbox.base_url
    base_url = kaspro_base_url or config.kaspro_base_url
    kaspro = KasProClient(config.kaspro_settings(base_url), clock=clock)

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
        interceptors=[edge],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # gRPC turns SO_REUSEPORT on by default: a second instance would then share
            # the port (and split calls between two SQLite writers) instead of failing.
            ("grpc.so_reuseport", 0),
        ],
    )
    onboarding = Onboarding(db, kaspro, config.otp, clock)
    idempotency = Idempotency(db, clock)
    # Before any retry can be answered: no full KTP identity stays in the database.
    if reduced := await reduce_stored_answers(idempotency):
        log.info("reduced %d stored UpgradeKyc answers to what retries need", reduced)
    engine = Engine(
        db, kaspro, clock, Timing(unanswered_grace_seconds=config.reconcile_grace_seconds)
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
        TransactionServicer(db, operations), server
    )
    receiver = CallbackReceiver(
        engine,
        TopUps(engine),
        kaspro,
        CallbackSettings(
            secrets=[
                s
                for s in (config.kaspro_callback_secret, config.kaspro_callback_secret_previous)
                if s
            ],
            driver_va_prefixes=[p.prefix for p in config.driver_va_prefixes],
            driver_retail_prefixes=[p.prefix for p in config.driver_retail_prefixes],
            unverified_sample=config.unverified_callback_sample,
            unverified_top_up_checks=config.unverified_top_up_checks,
            inquiry_period_seconds=config.unverified_inquiry_period_seconds,
            inquiry_timeout_seconds=config.kaspro_timeout_seconds,
        ),
        clock,
        metrics,
    )
    reconciler = Reconciler(
        engine,
        rides,
        receiver.retry_parked,
        interval_seconds=config.reconcile_interval_seconds,
        inquiry_timeout_seconds=config.kaspro_timeout_seconds,
        overdue_after_seconds=config.reconcile_overdue_seconds,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = _listen(server, config)
    except RuntimeError as exc:
        await kaspro.aclose()
        await db.close()
        for close in reversed(closers):
            await close()
        raise OSError(f"cannot listen on {config.grpc_listen}: {exc}") from exc
    serving = asyncio.Event()  # set while serving; /healthz reads it
    serving.set()
    http = await start_http(
        create_http_app(receiver, reconciler, serving.is_set, metrics), config, metrics
    )
    closers.append(http.stop)
    if sandbox is not None:
        # The embedded sandbox tells its callbacks to our receiver.
        sandbox.state.callback_url = f"http://127.0.0.1:{http.port}{CALLBACK_PATH}"
    await server.start()
    reconciling = asyncio.create_task(reconciler.run_forever(), name="reconciler")
    closers.append(lambda: _cancel(reconciling))
    housekeeping = asyncio.create_task(
        run_housekeeping(db, clock, idempotency_ttl_seconds=config.idempotency_ttl_hours * 3600),
        name="housekeeping",
    )
    closers.append(lambda: _cancel(housekeeping))
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
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
        _db=db,
        _kaspro=kaspro,
        reconciler=reconciler,
        metrics=metrics,
        _closers=closers,
    )


def _listen(server: grpc.aio.Server, config: Config) -> int:
    """Add the gRPC port: TLS when a certificate is configured (mutual with a client CA)."""
    tls = config.tls
    if tls is None:
        return server.add_insecure_port(config.grpc_listen)
    credentials = grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.mutual,
    )
    return server.add_secure_port(config.grpc_listen, credentials)


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

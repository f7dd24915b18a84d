"""Command line: ``wallet-service serve`` and ``wallet-service sandbox``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from wallet_service import config as config_module
from wallet_service import logs
from wallet_service.domain.errors import DatabaseBusy
from wallet_service.gc_policy import settle_collector
from wallet_service.malloc_policy import return_freed_memory
from wallet_service.server import WalletService, serve
from wallet_service.store.database import SchemaTooNew

_WALKTHROUGH = """\
Wallet service listening on {address} (KasPro sandbox at {sandbox})
Development token (role admin): {token}

Onboard a customer (copy-paste into a shell at the repository root; README.md explains):{tls_note}
  g() {{ .venv/bin/grpcurl {transport} -emit-defaults -H 'authorization: Bearer {token}' "$@"; }}
  g {address} list
  g -d '{{"request_id":"reg-1","mobile_number":"081234567890","first_name":"Siti","last_name":"Rahayu","email":"siti@example.com"}}' {address} wallet.v1.AccountService/RegisterCustomer
  g -d '{{"mobile_number":"081234567890"}}' {address} wallet.v1.AccountService/RequestOtp
  curl -s '{sandbox}/_sandbox/otp?mobileNumber=081234567890'; echo    # the OTP the sandbox "sent"
  g -d '{{"mobile_number":"081234567890","otp":"<the OTP>"}}' {address} wallet.v1.AccountService/VerifyOtp
  g -d "{{\\"request_id\\":\\"kyc-1\\",\\"mobile_number\\":\\"081234567890\\",\\"id_card_image\\":\\"$(base64 -w0 docs/samples/ktp.jpg)\\",\\"selfie_image\\":\\"$(base64 -w0 docs/samples/selfie.jpg)\\",\\"selfie_with_id_card_image\\":\\"$(base64 -w0 docs/samples/selfie-ktp.jpg)\\"}}" {address} wallet.v1.AccountService/UpgradeKyc
  g -d '{{"mobile_number":"081234567890"}}' {address} wallet.v1.AccountService/GetAccount
Stop with Ctrl-C (in-flight calls get {grace:.0f} s to finish).
"""


def _grpcurl_transport(config: config_module.Config) -> tuple[str, str]:
    """grpcurl's transport flags for the gRPC port, and a note on the files they name."""
    if config.tls is None:
        return "-plaintext", ""
    if not config.tls.mutual:
        return "-cacert ca.pem", (
            "\n  (TLS is on: ca.pem = the CA that signed WALLET_TLS_CERT_FILE)"
        )
    return "-cacert ca.pem -cert client.pem -key client.key", (
        "\n  (mutual TLS is on: ca.pem = the CA that signed WALLET_TLS_CERT_FILE;"
        "\n   client.pem/client.key = a client certificate signed by WALLET_TLS_CLIENT_CA_FILE)"
    )


def _started(service: WalletService) -> None:
    settle_collector()
    _banner(service)


def _banner(service: WalletService) -> None:
    tokens = [t for t, c in service.config.callers.items() if c.name == "dev"]
    if not service.config.embedded_sandbox or not tokens:
        return
    transport, tls_note = _grpcurl_transport(service.config)
    print(
        _WALKTHROUGH.format(
            transport=transport,
            tls_note=tls_note,
            address=service.address,
            sandbox=service.kaspro_base_url,
            token=tokens[0],
            grace=service.config.grace_period_seconds,
        ),
        flush=True,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (it is on Linux), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wallet-service",
        description="The KasPro wallet service (gRPC). Configuration: WALLET_* variables "
        "(see README.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve",
        help="run the gRPC service (embedded SQLite + in-process KasPro sandbox by default)",
    )
    commands.add_parser(
        "sandbox", help="run the KasPro sandbox alone (see --help after it)", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "sandbox":
        from kaspro_sandbox.__main__ import main as sandbox_main

        return sandbox_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        config = config_module.load()
    except config_module.ConfigError as exc:
        print(f"wallet-service: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level)
    return_freed_memory()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, on_started=_started))
    except config_module.ConfigError as exc:  # what only start-up can check (descriptors)
        print(f"wallet-service: configuration error: {exc}", file=sys.stderr)
        return 2
    except (OSError, SchemaTooNew, DatabaseBusy) as exc:
        # A port in use; a database migrated by a newer release, or one that never
        # answered: said in one line, without a trace.
        print(f"wallet-service: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m kaspro_sandbox`: serve the sandbox standalone until interrupted."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn

from kaspro_sandbox import config as defaults
from kaspro_sandbox.app import create_app
from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.faults import FaultSpecError, FaultTable
from kaspro_sandbox.runner import base_url_for, bind_socket

# Only the command line: the same collector settings as the service's own process, since
# each full pass scans every open connection (docs/decisions/0009-garbage-collector-and-malloc.md).
from wallet_service.gc_policy import settle_collector

CONTROL_ENDPOINTS = (
    "GET    /_sandbox/otp?mobileNumber=08…        the last OTP 'sent' to a number",
    "POST   /_sandbox/otp/expire?mobileNumber=08… expire that OTP",
    "GET    /_sandbox/customers[/08…]             customers as the sandbox sees them",
    'POST   /_sandbox/customers/08…/balance       set a balance: {"balance": 150000}',
    "POST   /_sandbox/ocr-override                the idCardNumber the next eKYC returns",
    "GET    /_sandbox/requests                    request log (DELETE clears it)",
    "POST   /_sandbox/faults                      arm a fault rule (GET lists, DELETE clears)",
    "DELETE /_sandbox/faults/<id>                 disarm one rule",
    'POST   /_sandbox/faults/script               script one requestId: {"requestId", "steps"}',
    "GET    /_sandbox/faults/stats                faults injected, per kind and path",
    "POST   /_sandbox/tokens/expire               expire every issued token",
    'POST   /_sandbox/topup                       credit a top-up: {"mobileNumber", "amount", …}',
    "GET    /_sandbox/transactions[/<requestId>]  money transactions with their status",
    "POST   /_sandbox/transactions/<id>/complete  settle a pending transfer (or /fail)",
    "POST   /_sandbox/transactions/<id>/resend-callback  deliver the final callback again",
    'POST   /_sandbox/wallets/<account>/balance   set a platform balance: {"balance": 0}',
    "GET    /_sandbox/balances                    subscribers, platform wallets, external",
    "GET    /_sandbox/ledger                      the journal of every movement",
    "GET    /_sandbox/callbacks                   every callback try (DELETE clears)",
    'POST   /_sandbox/callback-url                where callbacks go: {"url": "http://…"}',
    "POST   /_sandbox/settings                    async_delay_seconds, auto_complete, cash_out_fee",
    "POST   /_sandbox/reset                       forget everything",
)


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {value}")
    return seconds


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"not a whole number >= 0: {value}")
    return count


def _retry_delays(value: str) -> tuple[float, ...]:
    """``quick``, ``realistic``, or the waits between a callback's tries, ``10,30,60``."""
    named = {
        "quick": defaults.QUICK_CALLBACK_RETRY_DELAYS,
        "realistic": defaults.REALISTIC_CALLBACK_RETRY_DELAYS,
    }
    if value in named:
        return named[value]
    try:
        return tuple(_seconds(part) for part in value.split(",") if part.strip())
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"not quick, realistic or a list of seconds >= 0: {value}"
        ) from None


def _fault_file(value: str) -> tuple[Mapping[str, Any], ...]:
    """A JSON file holding a list of fault rules, checked as the sandbox would arm them."""
    try:
        rules = json.loads(Path(value).read_text(encoding="utf-8"))
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value}: {exc.strerror}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value} is not JSON: {exc}") from None
    if not isinstance(rules, list):
        raise argparse.ArgumentTypeError(f"{value} must hold a JSON list of fault rules")
    try:
        FaultTable(rules=rules)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(f"{value}: {exc}") from None
    return tuple(rules)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kaspro_sandbox",
        description="A stateful fake of the KasPro partner gateway, for development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (0 = any)")
    parser.add_argument(
        "--otp-ttl", type=int, default=300, help="OTP lifetime in seconds (default 300)"
    )
    parser.add_argument(
        "--token-ttl",
        type=int,
        default=3600,
        help="access token lifetime in seconds (default 3600)",
    )
    parser.add_argument("--seed", type=int, default=None, help="make OTPs reproducible")
    parser.add_argument(
        "--callback-url",
        default=None,
        help="where to POST callbacks (final statuses, top-ups); default none",
    )
    parser.add_argument(
        "--async-delay",
        type=_seconds,
        default=defaults.SandboxConfig.async_delay_seconds,
        help="seconds before an async transfer completes by itself (default 0.5)",
    )
    parser.add_argument(
        "--callback-retries",
        type=_retry_delays,
        default=defaults.SandboxConfig.callback_retry_delays,
        metavar="DELAYS",
        help="the waits between a callback's tries: 'realistic' (default: 10 s, 30 s, 1 min, "
        "… 8 h, about a day in all), 'quick' (0.2,0.4,0.8,1.6) or seconds, comma-separated",
    )
    parser.add_argument(
        "--faults",
        type=_fault_file,
        default=(),
        metavar="FILE",
        help="a JSON list of fault rules to arm at start and on every reset",
    )
    parser.add_argument(
        "--fault-seed",
        type=int,
        default=None,
        help="seed of the fault draws (default: --seed)",
    )
    # The gateway's credentials: the service's own variables when they are set.
    for option, default, meaning in (
        ("client-id", defaults.DEV_CLIENT_ID, "OAuth client id"),
        ("client-secret", defaults.DEV_CLIENT_SECRET, "OAuth client secret"),
        ("hmac-key", defaults.DEV_HMAC_KEY, "HMAC key id, also the Partner-Key"),
        ("hmac-secret", defaults.DEV_HMAC_SECRET, "HMAC signing secret"),
    ):
        variable = "WALLET_KASPRO_" + option.upper().replace("-", "_")
        parser.add_argument(
            f"--{option}",
            default=os.environ.get(variable, default),
            help=f"{meaning} (env {variable})",
        )
    parser.add_argument(
        "--request-log-size",
        type=_count,
        default=defaults.SandboxConfig.request_log_size,
        metavar="N",
        help="the request log keeps the newest N entries (default 100000; 0 keeps none)",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not print a line per request (GET /_sandbox/requests still lists them)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    return SandboxConfig(
        client_id=args.client_id,
        client_secret=args.client_secret,
        hmac_key=args.hmac_key,
        hmac_secret=args.hmac_secret,
        token_ttl_seconds=args.token_ttl,
        otp_ttl_seconds=args.otp_ttl,
        seed=args.seed,
        callback_url=args.callback_url,
        async_delay_seconds=args.async_delay,
        callback_retry_delays=args.callback_retries,
        faults=args.faults,
        fault_seed=args.fault_seed,
        request_log_size=args.request_log_size,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    sock = bind_socket(args.host, args.port)
    base_url = base_url_for(args.host, sock.getsockname()[1])
    print(f"KasPro sandbox listening on {base_url}")
    print(f"client id {config.client_id}, HMAC key {config.hmac_key}")
    print(
        f"callbacks to {config.callback_url or '(none yet)'}, "
        f"async transfers complete after {config.async_delay_seconds:g} s"
    )
    delays = config.callback_retry_delays
    print(f"a callback is tried up to {len(delays) + 1} times over {sum(delays):g} s until a 2xx")
    if config.faults:
        seed = config.fault_seed if config.fault_seed is not None else config.seed
        print(f"{len(config.faults)} fault rule(s) armed, fault seed {seed}")
    print("Control endpoints (no auth):")
    for line in CONTROL_ENDPOINTS:
        print(f"  {line}")
    print("OTPs are printed here as they are 'sent'. Ctrl+C stops.", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            lifespan="off",
            log_level="info",
            access_log=not args.no_access_log,
        )
    )
    settle_collector()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

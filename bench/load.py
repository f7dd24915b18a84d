"""The load generator: a closed loop of N concurrent grpc.aio callers for D seconds.

Runs in its own process (``python -m bench.load``) so its CPU is not the server's.
Prints one JSON object: calls, errors by code (and by code and message), latency
percentiles, calls/s.

With ``--warmup W`` the run lasts W + D seconds and the calls started in the first W
are the warm-up: they run and their errors count, but their latencies and number are
reported apart (``warmup_calls``, ``warmup_p99_ms``), not in the percentiles or calls/s
(WatchEvents lags are counted from the start, warm-up included). Every caller's first
call opens connections (the service's to KasPro: 1,000 at once with 1,000 in flight),
which is start-up, not the steady state measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from wallet.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    payment_service_pb2,
    payment_service_pb2_grpc,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)

from bench.messages import ACCOUNT_REQUEST_BYTES
from wallet_service.gc_policy import settle_collector

Call = Callable[[int, int], Awaitable[None]]  # (worker, iteration)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # The same errors by code and message (a status's message names its reason).
    error_messages: Counter[str] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)
    warmup_latencies: list[float] = field(default_factory=list)
    # perf_counter() time from which a call's start counts it as measured
    measured_from: float = 0.0

    async def timed(self, call: Call, n: int, i: int) -> None:
        """Make one call and count its latency (warm-up or measured) or its error."""
        started = time.perf_counter()
        try:
            await call(n, i)
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            self.error_messages[f"{exc.code().name}: {(exc.details() or '')[:120]}"] += 1
        except Exception as exc:
            self.errors[type(exc).__name__] += 1
        else:
            elapsed = time.perf_counter() - started
            if started >= self.measured_from:
                self.latencies.append(elapsed)
            else:
                self.warmup_latencies.append(elapsed)

    def finished(self) -> int:
        """Calls finished so far, warm-up and errors included."""
        return len(self.latencies) + len(self.warmup_latencies) + sum(self.errors.values())

    def summary(self, seconds: float) -> dict[str, Any]:
        done = sorted(self.latencies)
        warmup = sorted(self.warmup_latencies)

        def pct(values: list[float], p: float) -> float:
            if not values:
                return 0.0
            return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2)

        lags = sorted(self.lags)
        return {
            "calls": len(done),
            "errors": dict(self.errors),
            "error_messages": dict(self.error_messages),
            "seconds": round(seconds, 3),
            "calls_per_s": round(len(done) / seconds, 1) if seconds else 0.0,
            "p50_ms": pct(done, 0.50),
            "p90_ms": pct(done, 0.90),
            "p99_ms": pct(done, 0.99),
            "warmup_calls": len(warmup),
            "warmup_p99_ms": pct(warmup, 0.99),
            "lag_events": len(lags),
            "lag_p50_ms": pct(lags, 0.50),
            "lag_p99_ms": pct(lags, 0.99),
        }


async def run(
    call: Call,
    concurrency: int,
    duration: float,
    stats: Stats,
    calls: int = 0,
    warmup: float = 0.0,
) -> float:
    """Call in a closed loop for ``warmup`` + ``duration`` seconds (or until ``calls``
    calls are done); the measured seconds."""
    stats.measured_from = time.perf_counter() + warmup
    deadline = stats.measured_from + duration

    def going() -> bool:
        if calls and stats.finished() >= calls:
            return False
        return time.perf_counter() < deadline

    async def worker(n: int) -> None:
        i = 0
        while going():
            await stats.timed(call, n, i)
            i += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return time.perf_counter() - stats.measured_from


async def run_open(
    call: Call, rate: float, duration: float, stats: Stats, warmup: float = 0.0
) -> float:
    """Open loop: start a call every 1/rate seconds whatever the earlier ones are doing,
    for ``warmup`` + ``duration`` seconds; the measured seconds."""

    started = time.perf_counter()
    stats.measured_from = started + warmup
    tasks = []
    n = 0
    while (now := time.perf_counter()) < stats.measured_from + duration:
        tasks.append(asyncio.create_task(stats.timed(call, n, 0)))
        n += 1
        await asyncio.sleep(max(started + n / rate - now, 0))
    await asyncio.gather(*tasks)
    return time.perf_counter() - stats.measured_from


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    metadata = (("authorization", f"Bearer {args.token}"),)
    numbers: list[str] = json.loads(args.numbers) if args.numbers else []
    options = [("grpc.max_receive_message_length", 21 * 1024 * 1024)]
    # Several channels: one HTTP/2 connection per channel spreads the streams. With
    # several targets (replicas) the channels alternate between them, and so do callers.
    targets = args.target.split(",")
    channels = [
        grpc.aio.insecure_channel(targets[n % len(targets)], options=options) for n in range(4)
    ]
    scenario = args.scenario

    def channel(n: int) -> grpc.aio.Channel:
        return channels[n % len(channels)]

    if scenario == "echo":
        calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
            c.unary_unary("/bench.Echo/Call") for c in channels
        ]

        async def call(n: int, i: int) -> None:
            await calls[n % len(calls)](ACCOUNT_REQUEST_BYTES, timeout=30)

    elif scenario in ("kaspro_direct", "transfer_direct"):
        from wallet_service.domain.phone import parse_mobile_number
        from wallet_service.kaspro import KasProClient, KasProSettings, kaspro_request_id

        # What a caller would do without the service: the same signed calls, straight
        # to the sandbox.
        client = KasProClient(
            KasProSettings(
                base_url=args.sandbox,
                client_id="wallet-dev",
                client_secret="wallet-dev-secret",
                hmac_key="wallet-dev-key",
                hmac_secret="wallet-dev-hmac-secret",
                timeout_seconds=30,
                ekyc_timeout_seconds=30,
                max_connections=max(100, args.concurrency) if scenario == "kaspro_direct" else 256,
            )
        )
        mobiles = [parse_mobile_number(n) for n in numbers]
        run_id = uuid.uuid4().hex[:8]
        counter = iter(range(10**9))

        async def call(n: int, i: int) -> None:
            if scenario == "kaspro_direct":
                await client.account_inquiry(mobiles[n % len(mobiles)])
                return
            k = next(counter)
            pair = (k * 2) % len(mobiles)
            source, target = mobiles[pair], mobiles[pair + 1]
            # What the service asks KasPro for one transfer: the receiver, then the P2P.
            await client.account_inquiry(target)
            await client.p2p_transfer(kaspro_request_id(run_id, str(k)), source, target, 1)

    elif scenario in ("get_account", "check_funds"):
        accounts = [account_service_pb2_grpc.AccountServiceStub(c) for c in channels]

        async def call(n: int, i: int) -> None:
            stub = accounts[n % len(accounts)]
            mobile = numbers[n % len(numbers)]
            if scenario == "get_account":
                await stub.GetAccount(
                    account_service_pb2.GetAccountRequest(mobile_number=mobile),
                    metadata=metadata,
                    timeout=30,
                )
            else:
                await stub.CheckFunds(
                    account_service_pb2.CheckFundsRequest(mobile_number=mobile, amount_idr=1),
                    metadata=metadata,
                    timeout=30,
                )

    elif scenario in ("transfer", "replay", "watch"):
        payments = [payment_service_pb2_grpc.PaymentServiceStub(c) for c in channels]
        run_id = uuid.uuid4().hex[:8]

        counter = iter(range(10**9))

        async def call(n: int, i: int) -> None:
            k = next(counter) if args.rate else n
            pair = (k * 2) % len(numbers)
            source, target = numbers[pair], numbers[pair + 1]
            if i % 2:
                source, target = target, source
            request_id = f"{run_id}-replay" if scenario == "replay" else f"{run_id}-{k}-{i}"
            if scenario == "replay":
                source, target = numbers[0], numbers[1]
            await payments[n % len(payments)].Transfer(
                payment_service_pb2.TransferRequest(
                    request_id=request_id,
                    from_mobile_number=source,
                    to_mobile_number=target,
                    amount_idr=1,
                ),
                metadata=metadata,
                timeout=30,
            )

        if scenario == "replay":
            await call(0, 0)  # the first call does the transfer; the loop repeats it

    elif scenario == "ride":
        payments = [payment_service_pb2_grpc.PaymentServiceStub(c) for c in channels]
        run_id = uuid.uuid4().hex[:8]

        async def call(n: int, i: int) -> None:
            stub = payments[n % len(payments)]
            pair = (n * 2) % len(numbers)
            passenger, driver = numbers[pair], numbers[pair + 1]
            ride = f"{run_id}-{n}-{i}"
            await stub.AuthorizeRidePayment(
                payment_service_pb2.AuthorizeRidePaymentRequest(
                    request_id=f"a-{ride}",
                    ride_id=ride,
                    passenger_mobile_number=passenger,
                    amount_idr=10,
                ),
                metadata=metadata,
                timeout=30,
            )
            await stub.CaptureRidePayment(
                payment_service_pb2.CaptureRidePaymentRequest(
                    request_id=f"c-{ride}",
                    ride_id=ride,
                    final_fare_idr=8,
                    driver_mobile_number=driver,
                    platform_fee_idr=2,
                ),
                metadata=metadata,
                timeout=30,
            )

    else:
        raise SystemExit(f"unknown scenario {scenario}")

    watcher: asyncio.Task[None] | None = None
    if scenario == "watch":
        watcher = asyncio.create_task(watch(channel(0), metadata, stats))
    # The generator keeps 1,000 calls in flight too: its full collections would pause
    # every one of them and show as the server's latency.
    settle_collector()
    cpu_before = time.process_time()
    if args.rate:
        seconds = await run_open(call, args.rate, args.duration, stats, args.warmup)
    else:
        seconds = await run(call, args.concurrency, args.duration, stats, args.calls, args.warmup)
    cpu_seconds = time.process_time() - cpu_before
    if watcher is not None:
        await asyncio.sleep(0.5)
        watcher.cancel()
    for c in channels:
        await c.close()
    summary = stats.summary(seconds)
    # The generator shares the machine too: its CPU belongs in the arithmetic (per call
    # made, warm-up included: its CPU time covers them all).
    made = max(summary["calls"] + summary["warmup_calls"], 1)
    summary["generator_cpu_s_per_1000"] = round(cpu_seconds / made * 1000, 3)
    return summary


async def watch(channel: grpc.aio.Channel, metadata: Any, stats: Stats) -> None:
    """Lag from a state change (its event's occurred_at) to its arrival here."""
    stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
    since = time.time()
    stream = stub.WatchEvents(
        transaction_service_pb2.WatchEventsRequest(after_sequence=0), metadata=metadata
    )
    async for response in stream:
        occurred = response.event.occurred_at.ToNanoseconds() / 1e9
        if occurred >= since:  # the backlog from before the run is not lag
            stats.lags.append(max(time.time() - occurred, 0.0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--target", default="", help="host:port, or several, comma-separated")
    parser.add_argument("--sandbox", default="")
    parser.add_argument("--token", default="bench-admin-token")
    parser.add_argument("--numbers", default="")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=0, help="stop after this many calls")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: calls per second")
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds of calls before the measured ones"
    )
    args = parser.parse_args()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(main_async(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""`python -m wallet_service.cluster` (`make run-cluster`): two replicas of the service on
one PostgreSQL database, with the KasPro sandbox as a process of its own, for trying
several replicas on one machine. tests/replicas starts its processes with these helpers.

Every replica is a plain `wallet-service serve` with its own gRPC and HTTP ports; they
share the books through the database. The sandbox sends KasPro's callbacks to the first
replica; any replica accepts them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaspro_sandbox import config as sandbox
from wallet_service.config import DEV_TOKEN
from wallet_service.http import CALLBACK_PATH

DEFAULT_DB_URL = "postgresql://postgres@127.0.0.1:5432/wallet"
DEV_CALLERS = f"dev:admin:{DEV_TOKEN}"
# How long a replica may take to answer SERVING (it migrates an empty database first),
# and how long a stopping one may finish its calls before it is killed.
START_SECONDS = 60.0
STOP_SECONDS = 20.0


@dataclass(frozen=True)
class ReplicaPorts:
    grpc: int
    http: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    @property
    def callback_url(self) -> str:
        return f"http://127.0.0.1:{self.http}{CALLBACK_PATH}"


@dataclass
class Process:
    """A child process whose output goes to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM (the service finishes its calls), SIGKILL after ``timeout``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, its calls and transactions are cut."""
        self.popen.kill()
        self.popen.wait()


def spawn(name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> Process:
    """``python args…`` from the repository root, in a session of its own: a Ctrl-C at the
    terminal reaches the launcher only, which stops the children in order."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=Path(__file__).resolve().parents[1],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log)


def without_wallet_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("WALLET_")}


def sandbox_args(port: int, callback_url: str, *options: str) -> list[str]:
    """The standalone sandbox (`python -m kaspro_sandbox`) calling back ``callback_url``."""
    return ["-m", "kaspro_sandbox", "--port", str(port), "--callback-url", callback_url, *options]


def replica_env(
    base: Mapping[str, str],
    db_url: str,
    ports: ReplicaPorts,
    sandbox_url: str,
    callers: str = DEV_CALLERS,
) -> dict[str, str]:
    """``base`` with what makes a replica: the database, its ports, and the sandbox with
    its development credentials."""
    return {
        **base,
        "WALLET_DB_URL": db_url,
        "WALLET_GRPC_LISTEN": ports.target,
        "WALLET_HTTP_LISTEN": f"127.0.0.1:{ports.http}",
        **sandbox.service_environment(sandbox_url),
        "WALLET_CALLER_TOKENS": callers,
    }


def serving(target: str) -> bool:
    """The replica at ``target`` answers SERVING to a gRPC health check."""
    try:
        with grpc.insecure_channel(target) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
    except grpc.RpcError:
        return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def shown_url(url: str) -> str:
    """The URL with its password hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def quoted(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(url: str) -> bool:
    """Create the database ``url`` names when it does not exist; True if it was created."""
    try:
        connection = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await connection.close()
        return False
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {quoted(name)}")
    except asyncpg.DuplicateDatabaseError:
        return False  # created meanwhile by someone else
    finally:
        await admin.close()
    return True


class Stop:
    """Set by SIGINT or SIGTERM: a plain flag, which a signal handler may set at any time."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._request)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopping; whether stopping."""
        if not self.requested:
            time.sleep(seconds)
        return self.requested


def wait_until(
    ready: Callable[[], bool], processes: Sequence[Process], stop: Stop
) -> Process | None:
    """Poll until ``ready()``; the process among ``processes`` that exited meanwhile, if any
    (or the first of them when Ctrl-C came or START_SECONDS passed)."""
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        for process in processes:
            if process.exited() is not None:
                return process
        if stop.requested or time.monotonic() > deadline:
            return processes[0]
        stop.wait(0.05)
    return None


def ports_list(text: str) -> list[int]:
    try:
        ports = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ports: {text}") from None
    if not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"ports must be between 1 and 65535: {text}")
    return ports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wallet_service.cluster",
        description="Replicas of the wallet service on one PostgreSQL database "
        f"(WALLET_DB_URL, default {DEFAULT_DB_URL}; created if missing) and the KasPro "
        "sandbox, until Ctrl-C. Other WALLET_* variables are passed to every replica.",
    )
    parser.add_argument(
        "--grpc-ports",
        type=ports_list,
        default=[50051, 50052],
        help="gRPC port of each replica, one replica per port (default 50051,50052)",
    )
    parser.add_argument(
        "--http-ports",
        type=ports_list,
        default=[8081, 8082],
        help="HTTP port (callbacks, /healthz, /metrics) of each replica (default 8081,8082)",
    )
    parser.add_argument("--sandbox-port", type=int, default=8090, help="default 8090")
    parser.add_argument(
        "--log-dir", type=Path, default=Path("var/cluster"), help="default var/cluster"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.grpc_ports) != len(args.http_ports):
        parser.error("--grpc-ports and --http-ports need one port per replica each")
    db_url = os.environ.get("WALLET_DB_URL", "").strip() or DEFAULT_DB_URL
    try:
        if asyncio.run(ensure_database(db_url)):
            print(f"created the database {shown_url(db_url)}", flush=True)
    except (OSError, asyncpg.PostgresError, ValueError) as exc:
        print(
            f"cluster: cannot use the database {shown_url(db_url)}: {exc}\n"
            "Start PostgreSQL there, or name another with WALLET_DB_URL.",
            file=sys.stderr,
        )
        return 2
    stop = Stop()
    replicas = [ReplicaPorts(g, h) for g, h in zip(args.grpc_ports, args.http_ports, strict=True)]
    sandbox_url = f"http://127.0.0.1:{args.sandbox_port}"
    base = {"WALLET_CALLER_TOKENS": DEV_CALLERS, **os.environ}
    log_dir: Path = args.log_dir
    processes = [
        spawn(
            "sandbox",
            sandbox_args(args.sandbox_port, replicas[0].callback_url),
            without_wallet_settings(base),
            log_dir / "sandbox.log",
        )
    ]
    try:
        if gone := wait_until(lambda: port_open(args.sandbox_port), processes, stop):
            return _failed(gone, stop)
        for number, ports in enumerate(replicas, 1):
            env = replica_env(base, db_url, ports, sandbox_url, base["WALLET_CALLER_TOKENS"])
            name = f"replica-{number}"
            processes.append(
                spawn(name, ["-m", "wallet_service", "serve"], env, log_dir / f"{name}.log")
            )
        # Started together: one migrates an empty database, the others wait for it.
        if gone := wait_until(lambda: all(serving(p.target) for p in replicas), processes, stop):
            return _failed(gone, stop)
        print(banner(db_url, sandbox_url, replicas, processes, log_dir), flush=True)
        return _watch(processes, stop)
    finally:
        for process in reversed(processes):  # the replicas first, then the sandbox
            print(f"{process.name} stopped ({_exit_text(process.stop())})", flush=True)


def _watch(processes: list[Process], stop: Stop) -> int:
    """Until Ctrl-C: say when a process exits; give up when no replica is left."""
    told: set[str] = set()
    while not stop.wait(0.2):
        for process in processes:
            code = process.exited()
            if code is not None and process.name not in told:
                told.add(process.name)
                print(
                    f"{process.name} (pid {process.pid}) exited ({_exit_text(code)}); "
                    f"its log: {process.log}",
                    flush=True,
                )
        if all(p.name in told for p in processes[1:]):
            print("no replica is left: stopping", flush=True)
            return 1
    print("stopping: each replica finishes its calls, then the sandbox stops", flush=True)
    return 0


def _failed(process: Process, stop: Stop) -> int:
    if stop.requested:
        return 0
    code = process.exited()
    why = "did not start in time" if code is None else f"exited ({_exit_text(code)})"
    tail = process.log.read_text(errors="replace")[-3000:]
    print(f"{process.name} {why}; the end of {process.log}:\n{tail}", file=sys.stderr)
    return 1


def _exit_text(code: int) -> str:
    if code < 0:
        return f"ended by {signal.Signals(-code).name}"
    return f"exit code {code}"


def banner(
    db_url: str,
    sandbox_url: str,
    replicas: Sequence[ReplicaPorts],
    processes: Sequence[Process],
    log_dir: Path,
) -> str:
    """How to reach each replica, a grpcurl command for each, and a round_robin client."""
    grpcurl = _relative(Path(sys.executable).parent / "grpcurl")
    python = _relative(Path(sys.executable))
    lines = [
        f"{len(replicas)} replicas of the wallet service on {shown_url(db_url)}",
        f"  sandbox     {sandbox_url}, control endpoints in docs/sandbox.md "
        f"(pid {processes[0].pid})",
    ]
    for number, (ports, process) in enumerate(zip(replicas, processes[1:], strict=True), 1):
        lines.append(
            f"  replica-{number}   gRPC {ports.target}, HTTP 127.0.0.1:{ports.http} "
            f"(callbacks, /healthz, /metrics) (pid {process.pid})"
        )
    lines += [
        f"Logs: {log_dir}/<name>.log. KasPro's callbacks go to replica-1 "
        f"({replicas[0].callback_url}); any replica accepts them.",
        f"Development token (role admin): {DEV_TOKEN}",
        "",
        "grpcurl, one replica each (copy-paste at the repository root): register on",
        "the first, read the account from the others (the books are shared):",
        f"  g() {{ {grpcurl} -plaintext -emit-defaults -H "
        f"'authorization: Bearer {DEV_TOKEN}' \"$@\"; }}",
    ]
    register = '\'{"request_id":"reg-1","mobile_number":"081234567890","first_name":"Siti"}\''
    account = '\'{"mobile_number":"081234567890"}\''
    for number, ports in enumerate(replicas, 1):
        call = (
            f"-d {register} {ports.target} wallet.v1.AccountService/RegisterCustomer"
            if number == 1
            else f"-d {account} {ports.target} wallet.v1.AccountService/GetAccount"
        )
        lines.append(f"  g {call}")
    targets = ",".join(p.target for p in replicas)
    lines += [
        "",
        "A client over all replicas with gRPC's round_robin policy (its calls take turns):",
        f"{python} - <<'EOF'",
        "import grpc",
        "from wallet.v1 import account_service_pb2 as pb, account_service_pb2_grpc as rpc",
        f'channel = grpc.insecure_channel("ipv4:{targets}",',
        '                                 options=[("grpc.lb_policy_name", "round_robin")])',
        "accounts = rpc.AccountServiceStub(channel)",
        f'auth = [("authorization", "Bearer {DEV_TOKEN}")]',
        f"for _ in range({len(replicas)}):",
        '    request = pb.GetAccountRequest(mobile_number="081234567890")',
        "    answer = accounts.GetAccount(request, metadata=auth, timeout=10)",
        "    print(answer.account.mobile_number, answer.account.first_name)",
        "EOF",
        "",
        "Ctrl-C stops them all.",
    ]
    return "\n".join(lines)


def _relative(path: Path) -> str:
    """``path`` from the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())

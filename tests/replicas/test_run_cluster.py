"""`make run-cluster` (`python -m wallet_service.cluster`): two replicas and the sandbox
as processes on one database it creates; what it prints works as printed; it says when a
replica exits, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg

from wallet_service import cluster

from .harness import ROOT, free_port

STARTED = "Ctrl-C stops them all."


class Launcher:
    """The launcher as a process, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "wallet_service.cluster", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def until_printed(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.popen.poll() is None, f"the launcher exited:\n{self.output}"
            assert time.monotonic() < deadline, f"{text!r} not printed:\n{self.output}"
            time.sleep(0.05)

    def pid_of(self, name: str) -> int:
        found = re.search(rf"^  {name} .*\(pid (\d+)\)$", self.output, flags=re.MULTILINE)
        assert found is not None, self.output
        return int(found.group(1))

    def block(self, first: str, last: str) -> str:
        """The printed lines from the first that holds ``first`` to the next that holds
        ``last``."""
        start = next(i for i, line in enumerate(self.lines) if first in line)
        end = next(i for i in range(start + 1, len(self.lines)) if last in self.lines[i])
        return "\n".join(self.lines[start : end + 1])


def run_shell(script: str) -> subprocess.CompletedProcess[str]:
    """A printed command, pasted into a shell at the repository root."""
    return subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_run_cluster_serves_two_replicas_sharing_one_set_of_books(
    missing_database: str, tmp_path: Path
) -> None:
    grpc_ports, http_ports = [free_port(), free_port()], [free_port(), free_port()]
    env = {
        **cluster.without_wallet_settings(os.environ),
        "WALLET_DB_URL": missing_database,
        "WALLET_DB_POOL_SIZE": "3",
        "WALLET_GRACE_PERIOD_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    launcher = Launcher(
        [
            "--grpc-ports",
            ",".join(map(str, grpc_ports)),
            "--http-ports",
            ",".join(map(str, http_ports)),
            "--sandbox-port",
            str(free_port()),
            "--log-dir",
            str(tmp_path),
        ],
        env,
    )
    children: list[int] = []
    try:
        launcher.until_printed(STARTED)
        children = [launcher.pid_of(n) for n in ("sandbox", "replica-1", "replica-2")]
        assert f"created the database {cluster.shown_url(missing_database)}" in launcher.lines
        connection = await asyncpg.connect(missing_database)
        await connection.close()

        # The grpcurl commands, as printed: register at replica-1, read at replica-2.
        done = run_shell(launcher.block("g() {", "AccountService/GetAccount"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.count('"mobile_number": "+6281234567890"') == 2, done.stdout
        assert done.stdout.count('"first_name": "Siti"') == 2, done.stdout

        # The round_robin client, as printed, calls both.
        snippet = launcher.block("- <<'EOF'", "EOF")
        done = run_shell(snippet)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["+6281234567890 Siti"] * 2

        # A replica that dies is reported; the other keeps serving the same client.
        os.kill(children[2], signal.SIGKILL)
        launcher.until_printed(f"replica-2 (pid {children[2]}) exited (ended by SIGKILL)")
        done = run_shell(snippet)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["+6281234567890 Siti"] * 2

        launcher.popen.send_signal(signal.SIGINT)
        assert launcher.popen.wait(timeout=60) == 0, launcher.output
        launcher.until_printed("sandbox stopped")
        assert "replica-1 stopped (exit code 0)" in launcher.lines
        assert not any(alive(pid) for pid in children)
    finally:
        if launcher.popen.poll() is None:
            launcher.popen.kill()
            launcher.popen.wait()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

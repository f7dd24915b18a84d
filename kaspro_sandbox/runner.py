"""Serving the sandbox with uvicorn inside the caller's event loop, on a port of its choosing.

The embedded server leaves signal handling to the host process and stays quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from kaspro_sandbox.app import create_app
from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.state import SandboxState

_STARTUP_TIMEOUT_SECONDS = 10.0


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that never touches signal handlers: the host process owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 lets the OS choose, read it back with getsockname()."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    # IPPROTO_TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def base_url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RunningSandbox:
    """A sandbox being served in this event loop; `stop()` (or leaving `async with`) ends it."""

    def __init__(
        self,
        config: SandboxConfig,
        state: SandboxState,
        host: str,
        port: int,
        server: uvicorn.Server,
        task: asyncio.Task[None],
    ) -> None:
        self.config = config
        self.state = state
        self.host = host
        self.port = port
        self.base_url = base_url_for(host, port)
        self._server = server
        self._task = task

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (briefly), cancel the background
        tasks (pending completions, callback deliveries) and return when all have ended.
        """
        self._server.should_exit = True
        await self.state.aclose()
        await self._task
        # A request that was still in flight may have started a task meanwhile.
        await self.state.aclose()

    async def __aenter__(self) -> RunningSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_app(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, name: str = "asgi"
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Serve a Starlette app quietly in this event loop; returns once it accepts connections.

    Gives the server, its task and the bound port; set `server.should_exit` and await the
    task to stop it. The sandbox uses it, and so can a test's callback receiver.
    """
    sock = bind_socket(host, port)
    bound_port: int = sock.getsockname()[1]
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name}:{bound_port}")
    try:
        async with asyncio.timeout(_STARTUP_TIMEOUT_SECONDS):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError(f"the {name} server stopped while starting")
                await asyncio.sleep(0.005)
    except BaseException:
        server.should_exit = True
        if not task.done():
            task.cancel()
        sock.close()
        raise
    return server, task, bound_port


async def start_sandbox(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningSandbox:
    """Serve a fresh sandbox on host:port (0 = any free port) and return once it accepts."""
    config = config if config is not None else SandboxConfig()
    state = SandboxState(seed=config.seed, config=config)
    app = create_app(config, state)
    server, task, bound_port = await serve_app(app, host, port, name="kaspro-sandbox")
    return RunningSandbox(config, state, host, bound_port, server, task)

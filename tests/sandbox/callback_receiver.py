"""A partner's callback endpoint for the tests: records raw callbacks, answers as scripted.

Written from docs/kaspro.md § Callbacks, independently of the sandbox's signer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kaspro_sandbox.runner import serve_app

CALLBACK_PATH = "/callbacks/kaspro"
CALLBACK_SECRET = "wallet-dev-callback-secret"


@dataclass(frozen=True)
class Received:
    """One callback as it arrived: headers (lower-case names) and the raw body."""

    headers: dict[str, str]
    raw_body: bytes
    answered: int

    @property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw_body)
        return parsed

    def signature_is_valid(self, secret: str = CALLBACK_SECRET) -> bool:
        timestamp = self.headers["kaspro-callback-timestamp"]
        expected = hmac.new(
            secret.encode(), timestamp.encode() + b"." + self.raw_body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(expected, self.headers["kaspro-callback-signature"])


class CallbackReceiver:
    """Answers each callback with the next scripted status (200 once the script is empty)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[int] = []
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def clear(self) -> None:
        self.received.clear()
        self.script.clear()

    async def _receive(self, request: Request) -> Response:
        status = self.script.pop(0) if self.script else 200
        self.received.append(Received(dict(request.headers), await request.body(), status))
        return Response(status_code=status)

    async def start(self) -> None:
        app = Starlette(routes=[Route(CALLBACK_PATH, self._receive, methods=["POST"])])
        self._server, self._task, port = await serve_app(app, name="callback-receiver")
        self.url = f"http://127.0.0.1:{port}{CALLBACK_PATH}"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def wait_for(self, count: int, timeout: float = 3.0) -> list[Received]:
        """The callbacks received, once there are at least `count` of them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} callbacks, not {count}"
            await asyncio.sleep(0.01)
        return list(self.received)

"""KasPro's callbacks spread over the replicas: the sandbox calls one URL, and this
router, like a load balancer in front of the replicas' callback ports, sends each
delivery to a replica chosen at random.

A replica that refuses the connection (it is down) never saw the request, so the router
tries the next one, as a balancer does; one that was sent the callback and then cut or
did not answer in time may have stored it, so the sandbox is answered 502 and its own
retries deliver it again — to whichever replica the router picks then.
"""

from __future__ import annotations

import random
from collections import Counter

import aiohttp
from aiohttp import web

from bench import procs

PATH = "/callbacks/kaspro"
# Below the sandbox's 5 s per delivery, so that the sandbox hears our 502 and retries.
FORWARD_TIMEOUT_SECONDS = 4.5


class CallbackRouter:
    """An HTTP server on a loopback port of its own, forwarding to ``ports``."""

    def __init__(self, ports: list[int], seed: int) -> None:
        self.ports = ports
        self.port = procs.free_port()
        self._rng = random.Random(f"callbacks-{seed}")
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        # Deliveries answered by each replica (index), tries that found one down, and
        # deliveries answered 502 (cut or too slow after being sent).
        self.delivered: Counter[int] = Counter()
        self.refused = 0
        self.failed = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
        )
        app = web.Application()
        app.router.add_post(PATH, self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() == "content-type" or name.lower().startswith("kaspro-")
        }
        first = self._rng.randrange(len(self.ports))
        for n in range(len(self.ports)):
            replica = (first + n) % len(self.ports)
            url = f"http://127.0.0.1:{self.ports[replica]}{PATH}"
            try:
                async with self._session.post(url, data=body, headers=headers) as answer:
                    text = await answer.read()
                    self.delivered[replica] += 1
                    return web.Response(
                        status=answer.status,
                        body=text,
                        content_type=answer.content_type,
                    )
            except aiohttp.ClientConnectorError:
                self.refused += 1  # down: nothing was sent, the next replica gets it
            except (aiohttp.ClientError, TimeoutError):
                break
        self.failed += 1
        return web.Response(status=502, text="no replica answered")

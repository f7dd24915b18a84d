"""The sandbox's ASGI app: the partner gateway paths plus the `/_sandbox/` control paths."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.control import ControlApi
from kaspro_sandbox.partner import PartnerGateway
from kaspro_sandbox.payments import MoneyGateway
from kaspro_sandbox.settlement import Settlement
from kaspro_sandbox.state import SandboxState
from kaspro_sandbox.transport import TransportCapture


def create_app(config: SandboxConfig | None = None, state: SandboxState | None = None) -> Starlette:
    """A fake KasPro gateway; its state is `app.state.sandbox`, its config `app.state.config`.

    A `state` passed in should have been built with the same config (platform wallets,
    balance caps and starting settings come from the state's config). Background tasks
    (completions, callbacks) live in `state.tasks`: `await state.aclose()` ends them.
    Raises FaultSpecError (a ValueError) when `config.faults` holds a rule it cannot arm.
    """
    config = config if config is not None else SandboxConfig()
    state = state if state is not None else SandboxState(seed=config.seed, config=config)
    gateway = PartnerGateway(config, state)
    settlement = Settlement(config, state)
    partner_routes = [*gateway.routes(), *MoneyGateway(gateway, settlement).routes()]
    app = Starlette(
        routes=[*partner_routes, *ControlApi(config, state, settlement).routes()],
        middleware=[
            # Lets the `reset` fault drop a connection (transport.py).
            Middleware(TransportCapture),
            Middleware(ExactPaths, routes=partner_routes),
        ],
    )
    # The gateway knows paths exactly as KasPro spells them: no redirect to a trailing slash.
    app.router.redirect_slashes = False
    app.state.sandbox = state
    app.state.config = config
    app.state.settlement = settlement
    return app


class ExactPaths:
    """ASGI middleware: a call to one of `routes` (paths without parameters, as every
    gateway path is) goes straight to its endpoint — one dict lookup, where the router
    would try each route's pattern in turn and wrap the call in two more layers. Any other
    path or method goes on to the router (control paths, 404, 405). Starlette's error
    middleware stays outside either way: an endpoint's exception is a 500 as before.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes if not route.param_convertors}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.routes.get(scope["path"])
            if route is not None and route.methods is not None and scope["method"] in route.methods:
                response = await route.endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

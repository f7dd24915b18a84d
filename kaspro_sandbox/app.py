"""The sandbox's ASGI app: the partner gateway paths plus the `/_sandbox/` control paths."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

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
    app = Starlette(
        routes=[
            *gateway.routes(),
            *MoneyGateway(gateway, settlement).routes(),
            *ControlApi(config, state, settlement).routes(),
        ],
        # Lets the `reset` fault drop a connection (transport.py).
        middleware=[Middleware(TransportCapture)],
    )
    # The gateway knows paths exactly as KasPro spells them: no redirect to a trailing slash.
    app.router.redirect_slashes = False
    app.state.sandbox = state
    app.state.config = config
    app.state.settlement = settlement
    return app

"""A stateful fake of the KasPro partner gateway, served by Starlette (see docs/sandbox.md).

It plays KasPro's side of docs/kaspro.md and shares no code with `wallet_service`.
"""

from kaspro_sandbox.app import create_app
from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.ocr import ocr_identity
from kaspro_sandbox.runner import RunningSandbox, start_sandbox
from kaspro_sandbox.state import SandboxState

__all__ = [
    "RunningSandbox",
    "SandboxConfig",
    "SandboxState",
    "create_app",
    "ocr_identity",
    "start_sandbox",
]

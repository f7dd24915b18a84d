"""What the process does once the service is up (python -m wallet_service)."""

from __future__ import annotations

import gc
from types import SimpleNamespace
from typing import cast

from wallet_service.__main__ import _started
from wallet_service.config import Config
from wallet_service.server import WalletService


def test_objects_alive_at_start_up_are_frozen_out_of_the_collector() -> None:
    service = cast(WalletService, SimpleNamespace(config=Config(kaspro_base_url="http://k")))
    gc.unfreeze()
    try:
        _started(service)

        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()

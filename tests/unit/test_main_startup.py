"""What the process does once the service is up (python -m wallet_service)."""

from __future__ import annotations

import gc
from types import SimpleNamespace
from typing import cast

from wallet_service.__main__ import _started
from wallet_service.config import Config
from wallet_service.gc_policy import FULL_COLLECTION_EVERY
from wallet_service.server import WalletService


def test_start_up_objects_are_frozen_and_full_collections_are_rarer() -> None:
    service = cast(WalletService, SimpleNamespace(config=Config(kaspro_base_url="http://k")))
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        _started(service)

        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (thresholds[0], thresholds[1], FULL_COLLECTION_EVERY)
        assert thresholds[2] < FULL_COLLECTION_EVERY
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)

"""The service's own drift check (wallet_service/workers/drift.py), run by the auditor over
every wallet once the replicas stopped: at the end of a passing run KasPro's balances and
our ledger agree, escrow holds exactly the open holds, and no drift is left open."""

from __future__ import annotations

import time
from collections.abc import Mapping

from chaos.audit import Check
from wallet_service.config import load
from wallet_service.kaspro import KasProClient
from wallet_service.store.database import Database
from wallet_service.store.drifts import DriftStatus, list_drifts
from wallet_service.workers.drift import DriftCheck

# Drifts listed in the result at most (the table shows ten).
MAX_LISTED = 500


async def sweep(service_env: Mapping[str, str], sandbox_url: str) -> Check:
    """Two passes over every wallet, as the replicas' own check would make them apart:
    the first sees each difference, the second confirms it (nothing moves any more)."""
    check = Check("drift", "the service's drift check finds no drift over every wallet")
    config = load(service_env)
    db = await Database.open(config.database, pool_size=2)
    kaspro = KasProClient(config.kaspro_settings(sandbox_url))
    try:
        drift_check = DriftCheck.configured(db, kaspro, time.time, config, confirm_seconds=0.0)
        first = await drift_check.run_once(every_wallet=True)
        second = await drift_check.run_once(every_wallet=True)
        still_open = await list_drifts(db, status=DriftStatus.OPEN, limit=MAX_LISTED)
    finally:
        await kaspro.aclose()
        await db.close()
    check.checked = len(first.compared) + first.escrow_checked
    for account in sorted(set(first.skipped) | set(second.skipped)):
        check.fail(f"{account}: not compared (something still in flight, or KasPro silent)")
    for drift in still_open:
        check.fail(
            f"drift {drift.id} on {drift.account} ({drift.kind}): ours {drift.ours_idr}, "
            f"theirs {drift.theirs_idr} (off by {drift.difference_idr})"
        )
    return check

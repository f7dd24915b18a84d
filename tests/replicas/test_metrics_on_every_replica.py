"""Every replica serves every metric family on its own HTTP port; what it counted is its
own (a call made on one replica is not in the other's counts), and the shared facts of
the database read the same on both (docs/operations.md, "Metrics and alerts")."""

from __future__ import annotations

import httpx
from metric_labels import FAMILIES, families, value
from prometheus_client.metrics_core import Metric

from .harness import Cluster, Replica

FIRST, SECOND = "081234567890", "085712345678"
PAYMENT = "wallet.v1.PaymentService"


async def scrape(replica: Replica) -> dict[str, Metric]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{replica.ports.http}/metrics")
    assert response.status_code == 200
    return families(response.text)


async def test_every_replica_serves_every_family(stack: Cluster) -> None:
    a, b = await stack.start_replicas(2)
    await stack.onboard(a, FIRST, 100_000)
    await stack.onboard(b, SECOND)
    await b.transfer("b-1", FIRST, SECOND, 1_000)

    on_a, on_b = await scrape(a), await scrape(b)

    for found in (on_a, on_b):
        assert [name for name in FAMILIES if name not in found] == []
        assert value(found, "wallet_serving") == 1
    transfers = {"service": PAYMENT, "method": "Transfer", "code": "OK"}
    assert value(on_b, "wallet_grpc_calls", **transfers) == 1
    assert value(on_a, "wallet_grpc_calls", **transfers) == 0
    # Facts of the shared database: the same figure on every replica.
    for shared in ("wallet_unresolved_attempts", "wallet_frozen_operations", "wallet_drifts_open"):
        assert value(on_a, shared) == value(on_b, shared)

"""Identical requests (same caller, RPC and request_id) at two replicas at the same moment:
one KasPro money call, one operation, and every caller gets the decided answer or
REQUEST_IN_PROGRESS (MONEY-RULES rule 1)."""

from __future__ import annotations

import asyncio

import grpc
from wallet.v1 import common_pb2

from .harness import P2P_PATH, Cluster, Failure, outcome

SENDER, RECEIVER = "081234567890", "085712345678"
COPIES_PER_REPLICA = 4


async def test_duplicates_split_across_replicas_make_one_kaspro_call(stack: Cluster) -> None:
    a, b = await stack.start_replicas(2)
    await stack.onboard(a, SENDER, 100_000)
    await stack.onboard(b, RECEIVER)
    # KasPro answers the transfer a second late, so the copies meet the first one running.
    await stack.control(
        "POST", "/faults", json={"path": P2P_PATH, "kind": "latency", "delaySeconds": 1}
    )

    copies = [
        r.transfer("pay-1", SENDER, RECEIVER, 25_000)
        for _ in range(COPIES_PER_REPLICA)
        for r in (a, b)
    ]
    answers = await asyncio.gather(*(outcome(c) for c in copies))

    decided = [x for x in answers if isinstance(x, common_pb2.Transaction)]
    refused = [x for x in answers if isinstance(x, Failure)]
    assert decided, answers
    assert len(decided) + len(refused) == len(copies)
    assert {x.transaction_id for x in decided} == {decided[0].transaction_id}
    assert {x.status for x in decided} == {common_pb2.TRANSACTION_STATUS_SUCCEEDED}, decided
    assert set(refused) <= {Failure(grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")}, refused

    # A retry after them, at either replica, gets the decided answer.
    for replica in (a, b):
        again = await replica.transfer("pay-1", SENDER, RECEIVER, 25_000)
        assert again.transaction_id == decided[0].transaction_id
        assert again.status == common_pb2.TRANSACTION_STATUS_SUCCEEDED

    assert len(await stack.kaspro_requests(P2P_PATH)) == 1
    transfers = await stack.db.fetch("SELECT id FROM transactions WHERE type = 'TRANSFER'")
    assert [row["id"] for row in transfers] == [decided[0].transaction_id]
    balances = await stack.control("GET", "/balances")
    assert balances["subscribers"][SENDER] == 75_000
    assert balances["subscribers"][RECEIVER] == 25_000
    await stack.assert_books_agree()

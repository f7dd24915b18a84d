"""The five-guess OTP lockout holds when wrong guesses are spread over replicas in
parallel: KasPro never checks a sixth guess, and the right OTP is then refused too."""

from __future__ import annotations

import asyncio

import grpc

from .harness import VALIDATE_OTP_PATH, Cluster, Failure, outcome

MOBILE = "081234567890"
MAX_FAILED = 5  # WALLET_OTP_MAX_FAILED_ATTEMPTS' default
GUESSES_PER_REPLICA = 4

INVALID = Failure(grpc.StatusCode.FAILED_PRECONDITION, "OTP_INVALID")
LOCKED = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_LOCKED")


async def test_parallel_wrong_guesses_on_three_replicas_reach_kaspro_five_times(
    stack: Cluster,
) -> None:
    replicas = await stack.start_replicas(3)
    await replicas[0].register(MOBILE)
    await replicas[0].request_otp(MOBILE)
    otp = await stack.otp(MOBILE)
    wrong = (f"{(int(otp) + n) % 1_000_000:06d}" for n in range(1, 1000))
    # KasPro takes a moment over each check, so the guesses overlap.
    await stack.control(
        "POST",
        "/faults",
        json={"path": VALIDATE_OTP_PATH, "kind": "latency", "delaySeconds": 0.3, "times": 100},
    )

    checked = refused = 0
    for _ in range(MAX_FAILED):  # rounds, until KasPro has seen the five guesses
        guesses = [
            r.verify_otp(MOBILE, next(wrong)) for _ in range(GUESSES_PER_REPLICA) for r in replicas
        ]
        answers = await asyncio.gather(*(outcome(g) for g in guesses))
        assert set(answers) <= {INVALID, LOCKED}, answers
        checked = len(await stack.kaspro_requests(VALIDATE_OTP_PATH))
        assert checked <= MAX_FAILED
        refused += answers.count(INVALID)
        if checked == MAX_FAILED:
            break
    # Each guess KasPro checked was answered OTP_INVALID; every other one OTP_LOCKED.
    assert (checked, refused) == (MAX_FAILED, MAX_FAILED)

    # Locked at every replica, even for the right OTP, which KasPro never sees.
    for replica in replicas:
        assert await outcome(replica.verify_otp(MOBILE, otp)) == LOCKED
    assert len(await stack.kaspro_requests(VALIDATE_OTP_PATH)) == MAX_FAILED
    assert (await replicas[1].get_account(MOBILE)).linked is False

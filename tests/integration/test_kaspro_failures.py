"""KasPro misbehaving: unreadable answers, 5xx, unknown codes, unreachable, slow."""

from __future__ import annotations

import time

import grpc
import pytest
from wallet.v1 import account_service_pb2

from .conftest import (
    APP,
    GET_OTP_PATH,
    INQUIRY_PATH,
    LOCAL,
    OTHER_LOCAL,
    REGISTER_PATH,
    TOKEN_PATH,
    VALIDATE_OTP_PATH,
    Harness,
    assert_failure,
    closed_port,
    expect_failure,
    failure_of,
)

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


async def get_account(h: Harness, timeout: float | None) -> account_service_pb2.GetAccountResponse:
    return await h.accounts.GetAccount(
        account_service_pb2.GetAccountRequest(mobile_number=LOCAL), metadata=APP, timeout=timeout
    )


@pytest.mark.parametrize("kind", ["garbage", "http_500", "unknown_code"])
async def test_unreadable_inquiry_is_provider_unavailable(h: Harness, kind: str) -> None:
    await h.register()
    await h.arm_fault(INQUIRY_PATH, kind)

    failure = await expect_failure(h.get_account())

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert failure.retry_delay is not None
    faults = [r["fault"] for r in await h.kaspro_requests(INQUIRY_PATH)]
    assert faults[-1] == kind
    # The fault was for one call: the next read works again.
    assert (await h.get_account()).mobile_number == "+6281234567890"


@pytest.mark.parametrize("kind", ["garbage", "http_500", "unknown_code"])
@pytest.mark.parametrize("path", [TOKEN_PATH, REGISTER_PATH])
async def test_faults_while_registering_are_provider_unavailable(
    h: Harness, path: str, kind: str
) -> None:
    await h.arm_fault(path, kind)

    failure = await expect_failure(h.register())

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")


@pytest.mark.parametrize("kind", ["garbage", "http_500", "unknown_code"])
@pytest.mark.parametrize("path", [GET_OTP_PATH, VALIDATE_OTP_PATH])
async def test_faults_while_linking_are_provider_unavailable(
    h: Harness, path: str, kind: str
) -> None:
    await h.register()
    if path == VALIDATE_OTP_PATH:
        await h.request_otp()
    await h.arm_fault(path, kind)

    if path == GET_OTP_PATH:
        failure = await expect_failure(h.request_otp())
    else:
        failure = await expect_failure(h.verify_otp(await h.otp(LOCAL)))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert (await h.get_account()).linked is False


async def test_unreachable_kaspro_is_provider_unavailable_quickly(h: Harness) -> None:
    await h.restart(kaspro_base_url=f"http://127.0.0.1:{closed_port()}")

    # Within the 5 s deadline, or the caller would see DEADLINE_EXCEEDED.
    failure = await expect_failure(get_account(h, timeout=5.0))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")


async def test_slow_kaspro_is_answered_within_the_callers_deadline(h: Harness) -> None:
    # The service stops waiting for KasPro just before the caller's deadline, so the
    # caller learns why (PROVIDER_UNAVAILABLE) instead of a bare DEADLINE_EXCEEDED.
    await h.register()
    await h.arm_fault(INQUIRY_PATH, "delay", delay_seconds=2.0)

    failure = await expect_failure(get_account(h, timeout=0.5))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")


async def test_slow_kaspro_beyond_the_kaspro_timeout_is_provider_unavailable(h: Harness) -> None:
    await h.register()
    # The short KasPro timeout only once set up: onboarding at 0.3 s fails on a loaded machine.
    await h.restart(h.with_config(kaspro_timeout_seconds=0.3))
    await h.arm_fault(INQUIRY_PATH, "delay", delay_seconds=1.0)

    # Without the timeout the call would succeed after the 1 s delay.
    failure = await expect_failure(get_account(h, timeout=None))

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")


async def test_kaspro_timeout_applies_under_a_longer_caller_deadline(h: Harness) -> None:
    # Callers normally set deadlines; a generous one must not switch off the configured
    # KasPro timeout (the answer should be PROVIDER_UNAVAILABLE after ~0.3 s).
    await h.register()
    # The short KasPro timeout only once set up: onboarding at 0.3 s fails on a loaded machine.
    await h.restart(h.with_config(kaspro_timeout_seconds=0.3))
    await h.arm_fault(INQUIRY_PATH, "delay", delay_seconds=1.0)

    started = time.monotonic()
    try:
        answer = await get_account(h, timeout=5.0)
    except grpc.aio.AioRpcError as error:
        failure = failure_of(error)
    else:
        elapsed = time.monotonic() - started
        pytest.fail(
            f"answered OK ({answer.account.mobile_number}) after {elapsed:.2f} s: "
            "the configured 0.3 s KasPro timeout was not applied"
        )

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")


async def test_a_kaspro_call_given_up_on_does_not_answer_the_next_one(h: Harness) -> None:
    # One KasPro connection: the call after one whose time ran out must get its own answer,
    # never the late answer to the first on a reused connection.
    await h.restart(h.with_config(kaspro_timeout_seconds=0.3, kaspro_max_connections=1))
    await h.register()
    await h.register(OTHER_LOCAL, request_id="register-other")
    await h.arm_fault(INQUIRY_PATH, "delay", delay_seconds=0.6)

    failure = await expect_failure(h.get_account())
    other = await h.get_account(OTHER_LOCAL)

    assert_failure(failure, UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert other.mobile_number == "+6285712345678"

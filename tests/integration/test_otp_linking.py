"""RequestOtp / VerifyOtp: cooldown, hourly cap, expiry, lockout, linking, and their persistence."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from wallet.v1 import account_service_pb2

from wallet_service.domain.otp import OtpLimits

from .conftest import (
    APP,
    CANONICAL,
    DEADLINE,
    DISPATCH,
    E164,
    GET_OTP_PATH,
    INQUIRY_PATH,
    LOCAL,
    OTHER_LOCAL,
    VALIDATE_OTP_PATH,
    Harness,
    assert_failure,
    expect_failure,
    failure_of,
)

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def wrong(otp: str) -> str:
    """An OTP of the same shape that is certainly not ``otp``."""
    return otp[:-1] + str((int(otp[-1]) + 1) % 10)


async def fail_verifications(h: Harness, otp: str, times: int, mobile: str = LOCAL) -> None:
    for _ in range(times):
        failure = await expect_failure(h.verify_otp(wrong(otp), mobile))
        assert_failure(failure, PRECONDITION, "OTP_INVALID")


async def test_unknown_customer_cannot_get_an_otp(h: Harness) -> None:
    failure = await expect_failure(h.request_otp())

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    assert len(await h.kaspro_requests(GET_OTP_PATH)) == 1


async def test_a_refused_send_does_not_start_the_cooldown(h: Harness) -> None:
    await expect_failure(h.request_otp())
    await h.register()

    sent = await h.request_otp()

    assert sent.expires_in_seconds == 300


async def test_request_otp_reports_expiry_and_resend_delay(h: Harness) -> None:
    await h.register()

    sent = await h.request_otp()

    assert sent.expires_in_seconds == 300  # the sandbox's OTP lifetime, KasPro's figure
    assert sent.resend_after_seconds == 60
    assert len(await h.otp(LOCAL)) == 6


async def test_resend_within_the_cooldown_is_rate_limited(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    first_otp = await h.otp(LOCAL)

    failure = await expect_failure(h.request_otp())
    assert_failure(failure, EXHAUSTED, "OTP_RATE_LIMITED")
    assert failure.retry_delay == pytest.approx(60, abs=1)

    h.clock.advance(45)
    failure = await expect_failure(h.request_otp(E164))
    assert_failure(failure, EXHAUSTED, "OTP_RATE_LIMITED")
    assert failure.retry_delay == pytest.approx(15, abs=1)
    assert len(await h.kaspro_requests(GET_OTP_PATH)) == 1  # refused sends never reach KasPro

    h.clock.advance(16)
    await h.request_otp()
    second_otp = await h.otp(LOCAL)
    assert len(await h.kaspro_requests(GET_OTP_PATH)) == 2
    if second_otp != first_otp:
        # The first OTP was replaced at KasPro: only the new one links.
        failure = await expect_failure(h.verify_otp(first_otp))
        assert_failure(failure, PRECONDITION, "OTP_INVALID")
    assert (await h.verify_otp(second_otp)).linked


async def test_hourly_cap_limits_sends_with_retry_info(h: Harness) -> None:
    await h.register()
    for _ in range(5):
        await h.request_otp()
        h.clock.advance(61)
    # 5 sends at t = 0, 61, …, 244; now t = 305: the cooldown is over, the cap is not.
    failure = await expect_failure(h.request_otp())

    assert_failure(failure, EXHAUSTED, "OTP_RATE_LIMITED")
    assert failure.retry_delay == pytest.approx(3600 - 305, abs=1)
    assert len(await h.kaspro_requests(GET_OTP_PATH)) == 5

    h.clock.advance(3600 - 305 - 10)
    failure = await expect_failure(h.request_otp())
    assert_failure(failure, EXHAUSTED, "OTP_RATE_LIMITED")
    assert failure.retry_delay == pytest.approx(10, abs=1)

    h.clock.advance(10)
    await h.request_otp()
    assert len(await h.kaspro_requests(GET_OTP_PATH)) == 6


async def test_concurrent_requests_send_one_otp(h: Harness) -> None:
    await h.register()

    outcomes = await asyncio.gather(*(h.request_otp() for _ in range(10)), return_exceptions=True)

    sent = [o for o in outcomes if isinstance(o, account_service_pb2.RequestOtpResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(sent) == 1, outcomes
    assert len(refused) == 9, outcomes
    for error in refused:
        assert_failure(failure_of(error), EXHAUSTED, "OTP_RATE_LIMITED")
    assert len(await h.kaspro_requests(GET_OTP_PATH)) == 1


async def test_right_otp_links_the_wallet(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    h.clock.advance(30)
    linked_at = h.clock()

    account = await h.verify_otp(await h.otp(LOCAL))

    assert account.linked is True
    assert account.mobile_number == E164
    assert account.HasField("link_time")
    assert account.link_time.ToNanoseconds() / 1e9 == pytest.approx(linked_at, abs=0.01)
    read = await h.get_account(CANONICAL)
    assert read.linked is True
    assert read.link_time == account.link_time
    assert [r["code"] for r in await h.kaspro_requests(VALIDATE_OTP_PATH)] == [0]


async def test_otp_is_accepted_in_any_number_form(h: Harness) -> None:
    await h.register(E164)
    await h.request_otp(CANONICAL)

    account = await h.verify_otp(await h.otp(LOCAL), E164)

    assert account.linked is True


async def test_used_otp_cannot_be_used_again(h: Harness) -> None:
    await h.register()
    otp = (await h.request_otp(), await h.otp(LOCAL))[1]
    await h.verify_otp(otp)

    failure = await expect_failure(h.verify_otp(otp))

    assert_failure(failure, PRECONDITION, "OTP_EXPIRED")


async def test_otp_expires_after_kaspro_lifetime(h: Harness) -> None:
    await h.register()
    sent = await h.request_otp()
    otp = await h.otp(LOCAL)

    h.clock.advance(sent.expires_in_seconds)
    failure = await expect_failure(h.verify_otp(otp))

    assert_failure(failure, PRECONDITION, "OTP_EXPIRED")
    assert (await h.get_account()).linked is False


async def test_otp_is_valid_until_just_before_expiry(h: Harness) -> None:
    await h.register()
    sent = await h.request_otp()

    h.clock.advance(sent.expires_in_seconds - 1)
    account = await h.verify_otp(await h.otp(LOCAL))

    assert account.linked is True


async def test_kaspro_side_expiry_is_reported_as_expired(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    await h.expire_otp_at_kaspro(LOCAL)

    failure = await expect_failure(h.verify_otp(otp))

    assert_failure(failure, PRECONDITION, "OTP_EXPIRED")
    assert [r["code"] for r in await h.kaspro_requests(VALIDATE_OTP_PATH)] == [120002]
    # KasPro said expired: the service no longer lets the OTP through either.
    failure = await expect_failure(h.verify_otp(otp))
    assert_failure(failure, PRECONDITION, "OTP_EXPIRED")
    assert len(await h.kaspro_requests(VALIDATE_OTP_PATH)) == 1


async def test_verify_without_a_requested_otp_is_expired(h: Harness) -> None:
    await h.register()

    failure = await expect_failure(h.verify_otp("123456"))

    assert_failure(failure, PRECONDITION, "OTP_EXPIRED")


async def test_wrong_otp_is_invalid(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)

    failure = await expect_failure(h.verify_otp(wrong(otp)))

    assert_failure(failure, PRECONDITION, "OTP_INVALID")
    assert [r["code"] for r in await h.kaspro_requests(VALIDATE_OTP_PATH)] == [120001]
    # A few wrong tries below the limit do not stop the right OTP.
    assert (await h.verify_otp(otp)).linked is True


async def test_five_wrong_otps_lock_the_number_even_for_the_right_otp(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    await fail_verifications(h, otp, 5)
    validations = len(await h.kaspro_requests(VALIDATE_OTP_PATH))

    failure = await expect_failure(h.verify_otp(otp))

    assert_failure(failure, EXHAUSTED, "OTP_LOCKED")
    assert failure.retry_delay == pytest.approx(1800, abs=1)
    assert len(await h.kaspro_requests(VALIDATE_OTP_PATH)) == validations
    assert (await h.get_account()).linked is False


async def test_lock_holds_for_requests_and_every_number_form(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    await fail_verifications(h, otp, 5)
    h.clock.advance(600)
    sends = len(await h.kaspro_requests(GET_OTP_PATH))

    for form in (LOCAL, CANONICAL, E164):
        failure = await expect_failure(h.request_otp(form))
        assert_failure(failure, EXHAUSTED, "OTP_LOCKED")
        assert failure.retry_delay == pytest.approx(1200, abs=1)
        failure = await expect_failure(h.verify_otp(otp, form))
        assert_failure(failure, EXHAUSTED, "OTP_LOCKED")
    assert len(await h.kaspro_requests(GET_OTP_PATH)) == sends


async def test_lock_survives_a_restart_and_ends_after_30_minutes(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    await fail_verifications(h, otp, 5)

    await h.restart()

    failure = await expect_failure(h.verify_otp(otp, E164))
    assert_failure(failure, EXHAUSTED, "OTP_LOCKED")
    failure = await expect_failure(h.request_otp(CANONICAL))
    assert_failure(failure, EXHAUSTED, "OTP_LOCKED")
    assert failure.retry_delay == pytest.approx(1800, abs=1)

    h.clock.advance(1799)
    assert_failure(await expect_failure(h.request_otp()), EXHAUSTED, "OTP_LOCKED")

    h.clock.advance(1)
    await h.request_otp()
    account = await h.verify_otp(await h.otp(LOCAL))
    assert account.linked is True


async def test_lock_does_not_spill_to_other_numbers(h: Harness) -> None:
    await h.register()
    await h.register(OTHER_LOCAL, request_id="register-other")
    await h.request_otp()
    await fail_verifications(h, await h.otp(LOCAL), 5)

    assert (await h.link(OTHER_LOCAL)).linked is True


async def test_concurrent_wrong_otps_cannot_exceed_the_attempt_limit(h: Harness) -> None:
    # Guessing in parallel must not buy more tries than the limit: at most 5 wrong
    # OTPs may ever reach KasPro before the number is locked.
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    guesses = [f"{(int(otp) + i) % 1_000_000:06d}" for i in range(1, 21)]

    outcomes = await asyncio.gather(
        *(h.verify_otp(guess) for guess in guesses), return_exceptions=True
    )

    reasons = [
        failure_of(o).reason if isinstance(o, grpc.aio.AioRpcError) else repr(o) for o in outcomes
    ]
    assert set(reasons) <= {"OTP_INVALID", "OTP_LOCKED"}, reasons
    assert len(await h.kaspro_requests(VALIDATE_OTP_PATH)) <= 5
    assert_failure(await expect_failure(h.verify_otp(otp)), EXHAUSTED, "OTP_LOCKED")


async def test_cooldown_and_link_survive_a_restart(h: Harness) -> None:
    await h.register()
    await h.register(OTHER_LOCAL, request_id="register-other")
    await h.request_otp()
    linked = await h.link(OTHER_LOCAL)

    await h.restart()

    failure = await expect_failure(h.request_otp())
    assert_failure(failure, EXHAUSTED, "OTP_RATE_LIMITED")
    assert failure.retry_delay == pytest.approx(60, abs=1)
    read = await h.get_account(OTHER_LOCAL)
    assert read.linked is True
    assert read.link_time == linked.link_time
    # The OTP sent before the restart still links.
    assert (await h.verify_otp(await h.otp(LOCAL))).linked is True


async def test_configured_limits_apply(h: Harness) -> None:
    limits = OtpLimits(
        resend_cooldown_seconds=10, hourly_cap=2, max_failed_attempts=2, lock_seconds=120
    )
    await h.restart(h.with_config(otp=limits))
    await h.register()

    sent = await h.request_otp()
    assert sent.resend_after_seconds == 10
    failure = await expect_failure(h.request_otp())
    assert_failure(failure, EXHAUSTED, "OTP_RATE_LIMITED")
    assert failure.retry_delay == pytest.approx(10, abs=1)

    h.clock.advance(10)
    await h.request_otp()
    h.clock.advance(10)
    failure = await expect_failure(h.request_otp())
    assert_failure(failure, EXHAUSTED, "OTP_RATE_LIMITED")
    assert failure.retry_delay == pytest.approx(3600 - 20, abs=1)

    otp = await h.otp(LOCAL)
    await fail_verifications(h, otp, 2)
    failure = await expect_failure(h.verify_otp(otp))
    assert_failure(failure, EXHAUSTED, "OTP_LOCKED")
    assert failure.retry_delay == pytest.approx(120, abs=1)


@pytest.mark.parametrize("otp", ["abcd", "123", "123456789", "12 34", "١٢٣٤٥٦", "", "12345a"])
async def test_malformed_otp_is_refused_before_kaspro(h: Harness, otp: str) -> None:
    await h.register()
    await h.request_otp()

    failure = await expect_failure(h.verify_otp(otp))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "otp")
    assert await h.kaspro_requests(VALIDATE_OTP_PATH) == []


async def test_bad_number_and_otp_are_both_named(h: Harness) -> None:
    failure = await expect_failure(
        h.accounts.VerifyOtp(
            account_service_pb2.VerifyOtpRequest(mobile_number="0712345678", otp="x"),
            metadata=APP,
            timeout=DEADLINE,
        )
    )

    assert_failure(
        failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "mobile_number", "otp"
    )
    assert await h.kaspro_requests() == []


@pytest.mark.parametrize("mobile", ["", "0712345678", "+6281234567890 "])
async def test_request_otp_refuses_a_bad_number_before_kaspro(h: Harness, mobile: str) -> None:
    failure = await expect_failure(h.request_otp(mobile))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "mobile_number")
    assert await h.kaspro_requests() == []


async def test_dispatch_may_not_request_an_otp(h: Harness) -> None:
    await h.register()

    failure = await expect_failure(
        h.accounts.RequestOtp(
            account_service_pb2.RequestOtpRequest(mobile_number=LOCAL),
            metadata=DISPATCH,
            timeout=DEADLINE,
        )
    )

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert await h.kaspro_requests(GET_OTP_PATH) == []


async def test_link_succeeds_even_when_the_read_back_fails(h: Harness) -> None:
    # KasPro accepted the OTP: the answer is "linked", with only what we know ourselves,
    # rather than an error whose retry could only say OTP_EXPIRED.
    await h.register()
    await h.request_otp()
    await h.arm_fault(INQUIRY_PATH, "http_500")

    account = await h.verify_otp(await h.otp(LOCAL))

    assert account.linked is True
    assert account.HasField("link_time")
    assert account.mobile_number == E164
    assert not account.HasField("balance")
    assert [r["code"] for r in await h.kaspro_requests(VALIDATE_OTP_PATH)] == [0]
    assert (await h.get_account()).linked is True

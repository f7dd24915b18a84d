"""OTP rules: resend cooldown, hourly cap, expiry and the lockout after wrong OTPs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.otp import (
    ATTEMPT_LEASE_SECONDS,
    HOUR,
    OtpLimits,
    OtpState,
    after_wrong_otp,
    check_can_send,
    check_not_locked,
    check_verifiable,
    end_attempt,
    start_attempt,
)

NOW = 1_700_000_000.0
LIMITS = OtpLimits(
    resend_cooldown_seconds=60.0, hourly_cap=5, max_failed_attempts=5, lock_seconds=1800.0
)


def refusal(check: Callable[[], object]) -> WalletError:
    with pytest.raises(WalletError) as caught:
        check()
    return caught.value


def test_default_limits() -> None:
    assert OtpLimits() == LIMITS


# Sending.


def test_a_fresh_number_may_be_sent_an_otp() -> None:
    check_can_send(OtpState(), [], NOW, LIMITS)


@pytest.mark.parametrize(
    ("seconds_ago", "retry_after"), [(0.0, 60.0), (1.0, 59.0), (30.0, 30.0), (59.5, 0.5)]
)
def test_resend_within_the_cooldown_is_rate_limited(seconds_ago: float, retry_after: float) -> None:
    state = OtpState(last_sent_at=NOW - seconds_ago)
    error = refusal(lambda: check_can_send(state, [NOW - seconds_ago], NOW, LIMITS))
    assert error.reason is Reason.OTP_RATE_LIMITED
    assert error.retry_after_seconds == pytest.approx(retry_after)


@pytest.mark.parametrize("seconds_ago", [60.0, 61.0, 3600.0])
def test_resend_after_the_cooldown_is_allowed(seconds_ago: float) -> None:
    state = OtpState(last_sent_at=NOW - seconds_ago)
    check_can_send(state, [NOW - seconds_ago], NOW, LIMITS)


def test_a_zero_cooldown_allows_an_immediate_resend() -> None:
    limits = OtpLimits(resend_cooldown_seconds=0.0)
    check_can_send(OtpState(last_sent_at=NOW), [NOW], NOW, limits)


def test_the_hourly_cap_refuses_the_sixth_send() -> None:
    sends = [NOW - 3000, NOW - 2000, NOW - 1000, NOW - 500, NOW - 100]
    state = OtpState(last_sent_at=sends[-1])
    error = refusal(lambda: check_can_send(state, sends, NOW, LIMITS))
    assert error.reason is Reason.OTP_RATE_LIMITED
    # The oldest send leaves the one-hour window 600 s from now.
    assert error.retry_after_seconds == pytest.approx(600.0)
    assert "5" in error.message


def test_four_sends_in_the_hour_leave_room_for_a_fifth() -> None:
    sends = [NOW - 3000, NOW - 2000, NOW - 1000, NOW - 100]
    check_can_send(OtpState(last_sent_at=sends[-1]), sends, NOW, LIMITS)


def test_sends_older_than_an_hour_do_not_count() -> None:
    sends = [NOW - HOUR - 1, NOW - HOUR, NOW - 1000, NOW - 500, NOW - 300, NOW - 100]
    check_can_send(OtpState(last_sent_at=NOW - 100), sends, NOW, LIMITS)


def test_over_the_cap_the_wait_is_until_enough_sends_age_out() -> None:
    # Seven sends against a cap of five: three must leave the window, so the third oldest
    # decides.  The input order must not matter.
    sends = [NOW - 100, NOW - 3500, NOW - 900, NOW - 3000, NOW - 2000, NOW - 1500, NOW - 3400]
    error = refusal(lambda: check_can_send(OtpState(), sends, NOW, LIMITS))
    assert error.reason is Reason.OTP_RATE_LIMITED
    assert error.retry_after_seconds == pytest.approx(HOUR - 3000)


def test_the_hourly_wait_is_at_least_one_second() -> None:
    sends = [NOW - HOUR + 0.2] + [NOW - 10.0] * 4
    error = refusal(lambda: check_can_send(OtpState(), sends, NOW, LIMITS))
    assert error.reason is Reason.OTP_RATE_LIMITED
    assert error.retry_after_seconds == 1.0


def test_the_cooldown_is_reported_before_the_hourly_cap() -> None:
    sends = [NOW - 3000, NOW - 2000, NOW - 1000, NOW - 500, NOW - 10]
    error = refusal(lambda: check_can_send(OtpState(last_sent_at=NOW - 10), sends, NOW, LIMITS))
    assert error.retry_after_seconds == pytest.approx(50.0)


def test_a_locked_number_is_refused_before_any_rate_limit() -> None:
    state = OtpState(last_sent_at=NOW - 1, locked_until=NOW + 100)
    error = refusal(lambda: check_can_send(state, [NOW - 1] * 10, NOW, LIMITS))
    assert error.reason is Reason.OTP_LOCKED
    assert error.retry_after_seconds == pytest.approx(100.0)


@given(
    st.lists(st.floats(0.0, HOUR * 2, allow_nan=False), max_size=12),
    st.integers(1, 8),
)
def test_after_the_reported_wait_a_send_is_allowed(ages: list[float], cap: int) -> None:
    limits = OtpLimits(resend_cooldown_seconds=0.0, hourly_cap=cap)
    sends = [NOW - age for age in ages]
    if sum(1 for t in sends if t > NOW - HOUR) < cap:
        check_can_send(OtpState(), sends, NOW, limits)
        return
    error = refusal(lambda: check_can_send(OtpState(), sends, NOW, limits))
    assert error.reason is Reason.OTP_RATE_LIMITED
    assert error.retry_after_seconds is not None
    assert error.retry_after_seconds > 0
    # A millisecond of slack: RetryInfo carries milliseconds, and float sums round.
    check_can_send(OtpState(), sends, NOW + error.retry_after_seconds + 0.001, limits)


# Locking.


def test_check_not_locked_passes_without_a_lock() -> None:
    check_not_locked(OtpState(), NOW)


def test_check_not_locked_refuses_until_the_lock_ends() -> None:
    state = OtpState(locked_until=NOW + 1800)
    error = refusal(lambda: check_not_locked(state, NOW))
    assert error.reason is Reason.OTP_LOCKED
    assert error.retry_after_seconds == pytest.approx(1800.0)
    error = refusal(lambda: check_not_locked(state, NOW + 1799.5))
    assert error.retry_after_seconds == pytest.approx(0.5)


@pytest.mark.parametrize("after", [0.0, 0.001, 10_000.0])
def test_a_lock_ends_at_locked_until(after: float) -> None:
    check_not_locked(OtpState(locked_until=NOW), NOW + after)


# Verifying.


def test_an_otp_can_be_verified_before_it_expires() -> None:
    check_verifiable(OtpState(expires_at=NOW + 300), NOW)
    check_verifiable(OtpState(expires_at=NOW + 300), NOW + 299.999)


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(OtpState(), id="never-requested"),
        pytest.param(OtpState(expires_at=NOW), id="expires-now"),
        pytest.param(OtpState(expires_at=NOW - 1), id="expired"),
    ],
)
def test_no_live_otp_is_otp_expired(state: OtpState) -> None:
    error = refusal(lambda: check_verifiable(state, NOW))
    assert error.reason is Reason.OTP_EXPIRED
    assert error.retry_after_seconds is None


def test_a_locked_number_cannot_verify_even_a_live_otp() -> None:
    state = OtpState(expires_at=NOW + 300, locked_until=NOW + 60)
    error = refusal(lambda: check_verifiable(state, NOW))
    assert error.reason is Reason.OTP_LOCKED
    assert error.retry_after_seconds == pytest.approx(60.0)


# Wrong OTPs.


def test_a_wrong_otp_counts_one_failure() -> None:
    state = OtpState(expires_at=NOW + 300, last_sent_at=NOW - 10)
    after = after_wrong_otp(state, NOW, LIMITS)
    assert after == OtpState(expires_at=NOW + 300, last_sent_at=NOW - 10, failed_attempts=1)
    check_verifiable(after, NOW)


def test_the_fifth_wrong_otp_locks_and_burns_the_otp() -> None:
    state = OtpState(expires_at=NOW + 300, last_sent_at=NOW - 10)
    for _ in range(4):
        state = after_wrong_otp(state, NOW, LIMITS)
        check_verifiable(state, NOW)
    assert state.failed_attempts == 4
    locked = after_wrong_otp(state, NOW, LIMITS)
    assert locked.locked_until == NOW + 1800
    assert locked.expires_at is None
    assert locked.failed_attempts == 0
    assert locked.last_sent_at == NOW - 10
    assert refusal(lambda: check_verifiable(locked, NOW)).reason is Reason.OTP_LOCKED
    assert refusal(lambda: check_can_send(locked, [], NOW, LIMITS)).reason is Reason.OTP_LOCKED
    # Once the lock is over a new OTP may be sent, and there is nothing to verify yet.
    check_can_send(locked, [], NOW + 1800, LIMITS)
    assert refusal(lambda: check_verifiable(locked, NOW + 1800)).reason is Reason.OTP_EXPIRED


def test_a_limit_of_one_locks_on_the_first_wrong_otp() -> None:
    limits = OtpLimits(max_failed_attempts=1, lock_seconds=10.0)
    locked = after_wrong_otp(OtpState(expires_at=NOW + 300), NOW, limits)
    assert locked.locked_until == NOW + 10
    assert locked.expires_at is None


@given(st.integers(1, 10), st.integers(0, 20))
def test_wrong_otps_lock_exactly_at_the_limit(limit: int, wrong: int) -> None:
    limits = OtpLimits(max_failed_attempts=limit)
    state = OtpState(expires_at=NOW + 300)
    locks = 0
    for _ in range(wrong):
        state = after_wrong_otp(state, NOW, limits)
        if state.locked_until is not None:
            locks += 1
            state = OtpState(expires_at=NOW + 300)
        assert 0 <= state.failed_attempts < limit
    assert locks == wrong // limit


# Attempts in flight.


def test_attempts_in_flight_count_against_the_wrong_otp_limit() -> None:
    state = OtpState(expires_at=NOW + 300, failed_attempts=3)
    state = start_attempt(state, NOW, LIMITS)
    state = start_attempt(state, NOW, LIMITS)
    assert state.attempts_in_flight == 2
    error = refusal(lambda: start_attempt(state, NOW, LIMITS))
    assert error.reason is Reason.OTP_LOCKED
    assert error.retry_after_seconds == pytest.approx(1.0)
    # One answer comes back: a slot is free again.
    state = end_attempt(state, NOW)
    assert start_attempt(state, NOW, LIMITS).attempts_in_flight == 2


def test_an_attempt_needs_a_verifiable_otp() -> None:
    assert refusal(lambda: start_attempt(OtpState(), NOW, LIMITS)).reason is Reason.OTP_EXPIRED
    locked = OtpState(expires_at=NOW + 300, locked_until=NOW + 10)
    assert refusal(lambda: start_attempt(locked, NOW, LIMITS)).reason is Reason.OTP_LOCKED


def test_attempts_of_a_dead_process_stop_counting_after_the_lease() -> None:
    state = OtpState(expires_at=NOW + 1000, attempts_in_flight=5, attempt_started_at=NOW)
    assert refusal(lambda: start_attempt(state, NOW + 1, LIMITS)).reason is Reason.OTP_LOCKED
    later = NOW + ATTEMPT_LEASE_SECONDS
    assert start_attempt(state, later, LIMITS).attempts_in_flight == 1
    assert end_attempt(state, later).attempts_in_flight == 0


@given(st.integers(1, 10), st.integers(0, 10))
def test_never_more_attempts_than_the_limit_allows(limit: int, failed: int) -> None:
    limits = OtpLimits(max_failed_attempts=limit)
    state = OtpState(expires_at=NOW + 300, failed_attempts=min(failed, limit - 1))
    started = 0
    while True:
        try:
            state = start_attempt(state, NOW, limits)
        except WalletError:
            break
        started += 1
    assert started == limit - state.failed_attempts

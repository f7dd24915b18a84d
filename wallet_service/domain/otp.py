"""OTP rules: resend cooldown, hourly cap, expiry and lockout after wrong OTPs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from wallet_service.domain.errors import Reason, WalletError

HOUR = 3600.0
# A verification attempt not finished within this time died with its process: it no
# longer holds one of the attempts a number is allowed.
ATTEMPT_LEASE_SECONDS = 120.0


@dataclass(frozen=True)
class OtpLimits:
    resend_cooldown_seconds: float = 60.0
    hourly_cap: int = 5
    max_failed_attempts: int = 5
    lock_seconds: float = 1800.0


@dataclass(frozen=True, slots=True)
class OtpState:
    expires_at: float | None = None
    last_sent_at: float | None = None
    failed_attempts: int = 0
    locked_until: float | None = None
    # Verifications sent to KasPro and not answered yet, and when the last one began.
    attempts_in_flight: int = 0
    attempt_started_at: float | None = None


def check_not_locked(state: OtpState, now: float) -> None:
    """Raise OTP_LOCKED while the number is locked."""
    if state.locked_until is not None and now < state.locked_until:
        raise WalletError(
            Reason.OTP_LOCKED,
            "too many wrong OTPs: this number is locked for a while",
            retry_after_seconds=state.locked_until - now,
        )


def check_can_send(
    state: OtpState, sends_last_hour: Sequence[float], now: float, limits: OtpLimits
) -> None:
    """Raise OTP_LOCKED or OTP_RATE_LIMITED when another OTP may not be sent now."""
    check_not_locked(state, now)
    if state.last_sent_at is not None:
        wait = state.last_sent_at + limits.resend_cooldown_seconds - now
        if wait > 0:
            raise WalletError(
                Reason.OTP_RATE_LIMITED,
                "an OTP was sent moments ago: wait before asking for another",
                retry_after_seconds=wait,
            )
    recent = sorted(t for t in sends_last_hour if t > now - HOUR)
    if len(recent) >= limits.hourly_cap:
        # The oldest sends in the window must age out until one slot is free.
        frees_at = recent[len(recent) - limits.hourly_cap] + HOUR
        raise WalletError(
            Reason.OTP_RATE_LIMITED,
            f"at most {limits.hourly_cap} OTPs an hour for one number",
            retry_after_seconds=max(frees_at - now, 1.0),
        )


def check_verifiable(state: OtpState, now: float) -> None:
    """Raise OTP_LOCKED or OTP_EXPIRED when no OTP can be verified now."""
    check_not_locked(state, now)
    if state.expires_at is None or now >= state.expires_at:
        raise WalletError(
            Reason.OTP_EXPIRED, "the OTP expired or was not requested: request a new one"
        )


def after_wrong_otp(state: OtpState, now: float, limits: OtpLimits) -> OtpState:
    """The state after a wrong OTP: one more failure, locked at the limit."""
    failures = state.failed_attempts + 1
    if failures >= limits.max_failed_attempts:
        return replace(
            state, failed_attempts=0, locked_until=now + limits.lock_seconds, expires_at=None
        )
    return replace(state, failed_attempts=failures)


def _in_flight(state: OtpState, now: float) -> int:
    started = state.attempt_started_at
    if started is None or now - started >= ATTEMPT_LEASE_SECONDS:
        return 0
    return state.attempts_in_flight


def start_attempt(state: OtpState, now: float, limits: OtpLimits) -> OtpState:
    """Reserve one verification attempt before asking KasPro.

    Attempts in flight count against the wrong-OTP limit, so parallel guesses cannot
    get more tries to KasPro than the limit allows.
    """
    check_verifiable(state, now)
    in_flight = _in_flight(state, now)
    if state.failed_attempts + in_flight >= limits.max_failed_attempts:
        raise WalletError(
            Reason.OTP_LOCKED,
            "too many OTP attempts at once for this number: wait for their answers",
            retry_after_seconds=1.0,
        )
    return replace(state, attempts_in_flight=in_flight + 1, attempt_started_at=now)


def end_attempt(state: OtpState, now: float) -> OtpState:
    """Give back the attempt reserved by start_attempt (whatever KasPro answered)."""
    return replace(state, attempts_in_flight=max(_in_flight(state, now) - 1, 0))

"""Onboarding: register at KasPro, link the wallet with an OTP, upgrade with eKYC, read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from wallet_service.domain import otp as otp_rules
from wallet_service.domain.account import Account, KycIdentity, WalletAccount
from wallet_service.domain.customer import NewCustomer
from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.nik import nik_problem
from wallet_service.domain.otp import OtpLimits
from wallet_service.domain.phone import MobileNumber
from wallet_service.kaspro import (
    KasProClient,
    KasProRejected,
    KasProUnavailable,
    Registration,
    Rejection,
    kaspro_request_id,
)
from wallet_service.metrics import Metrics
from wallet_service.store import onboarding as rows
from wallet_service.store.database import Database, Transaction
from wallet_service.store.events import append_event

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Event types of the outbox (store/events.py), for account changes.
ACCOUNT_LINKED = "ACCOUNT_LINKED"
KYC_UPGRADED = "KYC_UPGRADED"

# How KasPro's definite refusals read to our callers.
_REJECTIONS: dict[Rejection, tuple[Reason, str]] = {
    Rejection.CUSTOMER_NOT_FOUND: (Reason.CUSTOMER_NOT_FOUND, "no KasPro customer has this number"),
    Rejection.CUSTOMER_ALREADY_REGISTERED: (
        Reason.CUSTOMER_ALREADY_REGISTERED,
        "this number is already registered at KasPro",
    ),
    Rejection.OTP_INVALID: (Reason.OTP_INVALID, "the OTP is wrong"),
    Rejection.OTP_EXPIRED: (Reason.OTP_EXPIRED, "the OTP expired: request a new one"),
    Rejection.IMAGE_REJECTED: (Reason.IMAGE_REJECTED, "KasPro could not use an eKYC image"),
    Rejection.INSUFFICIENT_FUNDS: (Reason.INSUFFICIENT_FUNDS, "the balance is too low"),
    Rejection.LIMIT_EXCEEDED: (Reason.LIMIT_EXCEEDED, "a KasPro limit would be exceeded"),
}


def provider_error(exc: KasProRejected | KasProUnavailable) -> WalletError:
    """Translate an adapter error for a caller of a non-money call."""
    if isinstance(exc, KasProUnavailable):
        return WalletError(
            Reason.PROVIDER_UNAVAILABLE,
            "KasPro is unavailable or answered unreadably; retry later",
            retry_after_seconds=1.0,
        )
    known = _REJECTIONS.get(exc.rejection)
    if known is not None:
        return WalletError(*known, metadata={"kaspro_code": str(exc.code)})
    log.error("KasPro refused a request as invalid: code %s", exc.code)
    return WalletError(
        Reason.PROVIDER_REJECTED,
        "KasPro refused the request",
        metadata={"kaspro_code": str(exc.code)},
    )


@dataclass(frozen=True, slots=True)
class OtpSent:
    expires_in_seconds: int
    resend_after_seconds: int


@dataclass(frozen=True, slots=True)
class KycResult:
    identity: KycIdentity
    nik_problem: str | None
    account: WalletAccount


class Onboarding:
    """The onboarding use cases. Holds no state of its own besides its collaborators."""

    def __init__(
        self,
        db: Database,
        kaspro: KasProClient,
        limits: OtpLimits,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._kaspro = kaspro
        self._limits = limits
        self._clock = clock
        # Onboarding of its own (tests) counts into a registry nobody serves.
        self._metrics = metrics or Metrics()

    async def register(
        self, caller: str, request_id: str, customer: NewCustomer, *, timeout: float | None
    ) -> WalletAccount:
        mobile = customer.mobile_number
        reference = kaspro_request_id(caller, "RegisterCustomer", request_id)
        registration = Registration(
            request_id=reference,
            mobile_number=mobile,
            first_name=customer.first_name,
            middle_name=customer.middle_name,
            last_name=customer.last_name,
            email=customer.email,
            address=customer.address,
            city=customer.city,
            province=customer.province,
            postal_code=customer.postal_code,
        )
        await rows.record_registration_attempt(self._db, mobile, reference)
        try:
            await self._kaspro.register_customer(registration, timeout=timeout)
        except KasProRejected as exc:
            # A retry of a registration whose answer we never got: KasPro says
            # "registered", and the registration carrying this very reference was ours.
            ours = await rows.registration_request_id(self._db, mobile)
            if exc.rejection is not Rejection.CUSTOMER_ALREADY_REGISTERED or ours != reference:
                raise provider_error(exc) from None
        except KasProUnavailable as exc:
            raise provider_error(exc) from None
        await rows.mark_registered(self._db, mobile, reference, self._clock())
        return await self._account_after_change(mobile, timeout=timeout)

    async def request_otp(self, mobile: MobileNumber, *, timeout: float | None) -> OtpSent:
        now = self._clock()

        async def reserve(tx: Transaction) -> None:
            # Reserve the send before calling KasPro so concurrent requests cannot
            # both pass the cooldown and the hourly cap.
            state = await rows.load_otp_state(tx, mobile)
            sends = await rows.sends_since(tx, mobile, now - otp_rules.HOUR)
            otp_rules.check_can_send(state, sends, now, self._limits)
            await rows.record_send(tx, mobile, now)
            await rows.save_otp_state(tx, mobile, replace(state, last_sent_at=now))

        async def give_back(tx: Transaction) -> None:
            await rows.forget_send(tx, mobile, now)
            state = await rows.load_otp_state(tx, mobile)
            if state.last_sent_at == now:
                await rows.save_otp_state(tx, mobile, replace(state, last_sent_at=None))

        try:
            await self._db.run(reserve)
        except WalletError as exc:
            if exc.reason is Reason.OTP_RATE_LIMITED:
                self._metrics.otp_rate_limited.inc()
            raise
        try:
            expiry = await self._kaspro.request_otp(mobile, timeout=timeout)
        except KasProRejected as exc:
            # Definitely not sent: give the slot back.
            await self._db.run(give_back)
            raise provider_error(exc) from None
        except KasProUnavailable as exc:
            # Maybe sent: the slot stays taken, so a flaky KasPro cannot be used to
            # flood a customer with messages.
            raise provider_error(exc) from None
        self._metrics.otp_sent.inc()

        async def note_expiry(tx: Transaction) -> None:
            state = await rows.load_otp_state(tx, mobile)
            await rows.save_otp_state(tx, mobile, replace(state, expires_at=now + expiry))

        await self._db.run(note_expiry)
        return OtpSent(
            expires_in_seconds=expiry,
            resend_after_seconds=round(self._limits.resend_cooldown_seconds),
        )

    async def verify_otp(
        self, mobile: MobileNumber, otp: str, *, timeout: float | None
    ) -> WalletAccount:

        async def reserve(tx: Transaction) -> None:
            # Reads the failures and guesses in flight and writes one more, before KasPro
            # is called: SERIALIZABLE on PostgreSQL, so that two replicas never both count
            # from four (docs/money.md, "Isolation on PostgreSQL").
            state = await rows.load_otp_state(tx, mobile)
            reserved = otp_rules.start_attempt(state, self._clock(), self._limits)
            await rows.save_otp_state(tx, mobile, reserved)

        await self._db.run(reserve)
        try:
            await self._kaspro.validate_otp(mobile, otp, timeout=timeout)
        except KasProRejected as exc:
            await self._end_attempt(mobile, exc.rejection)
            raise provider_error(exc) from None
        except BaseException as exc:
            await asyncio.shield(self._end_attempt(mobile, None))
            if isinstance(exc, KasProUnavailable):
                raise provider_error(exc) from None
            raise
        now = self._clock()

        async def link(tx: Transaction) -> None:
            state = await rows.load_otp_state(tx, mobile)
            done = otp_rules.end_attempt(state, now)
            await rows.save_otp_state(
                tx, mobile, replace(done, expires_at=None, failed_attempts=0, locked_until=None)
            )
            linked_at = await rows.mark_linked(tx, mobile, now)
            await append_event(
                tx,
                ACCOUNT_LINKED,
                mobile.canonical,
                {"mobile_number": mobile.canonical, "linked_at": linked_at},
                now,
            )

        await self._db.run(link)
        log.info("wallet %s linked", mobile.masked)
        return await self._account_after_change(mobile, timeout=timeout)

    async def _end_attempt(self, mobile: MobileNumber, rejection: Rejection | None) -> None:
        """Record how a verification attempt ended (``None``: no answer from KasPro)."""
        now = self._clock()

        async def end(tx: Transaction) -> bool:
            """Whether this answer locked the number."""
            state = otp_rules.end_attempt(await rows.load_otp_state(tx, mobile), now)
            locked = False
            if rejection is Rejection.OTP_INVALID:
                new_state = otp_rules.after_wrong_otp(state, now, self._limits)
                locked = (
                    new_state.locked_until is not None
                    and new_state.locked_until != state.locked_until
                )
                state = new_state
            elif rejection is Rejection.OTP_EXPIRED:
                state = replace(state, expires_at=None)
            await rows.save_otp_state(tx, mobile, state)
            return locked

        locked = await self._db.run(end)
        if rejection is Rejection.OTP_INVALID:
            self._metrics.otp_wrong_guesses.inc()
        if locked:
            self._metrics.otp_lockouts.inc()
            log.warning("wallet %s locked after too many wrong OTPs", mobile.masked)

    async def upgrade_kyc(
        self,
        caller: str,
        request_id: str,
        mobile: MobileNumber,
        id_card_image: bytes,
        selfie_image: bytes,
        selfie_with_id_card_image: bytes,
        *,
        timeout: float | None,
    ) -> KycResult:
        if await rows.linked_at(self._db, mobile) is None:
            raise WalletError(
                Reason.WALLET_NOT_LINKED, "link the wallet with an OTP before the eKYC upgrade"
            )
        reference = kaspro_request_id(caller, "UpgradeKyc", request_id)
        try:
            identity = await self._kaspro.upgrade_kyc(
                reference,
                mobile,
                id_card_image,
                selfie_image,
                selfie_with_id_card_image,
                timeout=timeout,
            )
        except (KasProRejected, KasProUnavailable) as exc:
            raise provider_error(exc) from None
        problem = nik_problem(identity.id_card_number)
        if problem is not None:
            log.warning("KasPro eKYC for %s returned a malformed NIK: %s", mobile.masked, problem)
        now = self._clock()

        async def mark_verified(tx: Transaction) -> None:
            await rows.mark_kyc_verified(tx, mobile, now)
            await append_event(
                tx,
                KYC_UPGRADED,
                mobile.canonical,
                {
                    "mobile_number": mobile.canonical,
                    "kyc_status": "VERIFIED",
                    "linked_at": await rows.linked_at(tx, mobile),
                },
                now,
            )

        await self._db.run(mark_verified)
        account = await self._account_after_change(mobile, timeout=timeout)
        return KycResult(identity=identity, nik_problem=problem, account=account)

    async def _account_after_change(
        self, mobile: MobileNumber, *, timeout: float | None
    ) -> WalletAccount:
        """The account after KasPro accepted a change, read back when KasPro answers.

        The change is done and is the caller's answer; failing the call because the read
        that follows failed would make the caller retry a change that already happened.
        """
        try:
            return await self.account(mobile, timeout=timeout)
        except WalletError as exc:
            if exc.reason is not Reason.PROVIDER_UNAVAILABLE:
                raise
            log.warning("KasPro read-back after a change to %s failed", mobile.masked)
            return WalletAccount(mobile, None, await rows.linked_at(self._db, mobile))

    async def account(self, mobile: MobileNumber, *, timeout: float | None) -> WalletAccount:
        account = await self._inquiry(mobile, timeout=timeout)
        return WalletAccount(mobile, account, await rows.linked_at(self._db, mobile))

    async def available_balance(self, mobile: MobileNumber, *, timeout: float | None) -> int:
        return (await self._inquiry(mobile, timeout=timeout)).balance.available_idr

    async def _inquiry(self, mobile: MobileNumber, *, timeout: float | None) -> Account:
        try:
            return await self._kaspro.account_inquiry(mobile, timeout=timeout)
        except (KasProRejected, KasProUnavailable) as exc:
            raise provider_error(exc) from None

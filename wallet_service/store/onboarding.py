"""Rows of onboarding: customers we registered or linked, and OTP state."""

from __future__ import annotations

from wallet_service.domain.otp import OtpState
from wallet_service.domain.phone import MobileNumber
from wallet_service.store.database import Database, Row, Transaction


def _otp_state(row: Row | None) -> OtpState:
    if row is None:
        return OtpState()
    return OtpState(
        expires_at=row["expires_at"],
        last_sent_at=row["last_sent_at"],
        failed_attempts=row["failed_attempts"],
        locked_until=row["locked_until"],
        attempts_in_flight=row["attempts_in_flight"],
        attempt_started_at=row["attempt_started_at"],
    )


async def load_otp_state(tx: Transaction, mobile: MobileNumber) -> OtpState:
    row = await tx.fetch_one("SELECT * FROM otp_state WHERE mobile_number = ?", (mobile.canonical,))
    return _otp_state(row)


async def save_otp_state(tx: Transaction, mobile: MobileNumber, state: OtpState) -> None:
    await tx.execute(
        """INSERT INTO otp_state (mobile_number, expires_at, last_sent_at, failed_attempts,
                                  locked_until, attempts_in_flight, attempt_started_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (mobile_number) DO UPDATE SET
               expires_at = excluded.expires_at,
               last_sent_at = excluded.last_sent_at,
               failed_attempts = excluded.failed_attempts,
               locked_until = excluded.locked_until,
               attempts_in_flight = excluded.attempts_in_flight,
               attempt_started_at = excluded.attempt_started_at""",
        (
            mobile.canonical,
            state.expires_at,
            state.last_sent_at,
            state.failed_attempts,
            state.locked_until,
            state.attempts_in_flight,
            state.attempt_started_at,
        ),
    )


async def sends_since(tx: Transaction, mobile: MobileNumber, since: float) -> list[float]:
    rows = await tx.fetch_all(
        "SELECT sent_at FROM otp_sends WHERE mobile_number = ? AND sent_at > ?",
        (mobile.canonical, since),
    )
    return [float(row["sent_at"]) for row in rows]


async def record_send(tx: Transaction, mobile: MobileNumber, sent_at: float) -> None:
    await tx.execute(
        "INSERT INTO otp_sends (mobile_number, sent_at) VALUES (?, ?)",
        (mobile.canonical, sent_at),
    )
    # Sends older than a day no longer count for anything.
    await tx.execute(
        "DELETE FROM otp_sends WHERE mobile_number = ? AND sent_at < ?",
        (mobile.canonical, sent_at - 86400),
    )


async def forget_send(tx: Transaction, mobile: MobileNumber, sent_at: float) -> None:
    await tx.execute(
        "DELETE FROM otp_sends WHERE mobile_number = ? AND sent_at = ?",
        (mobile.canonical, sent_at),
    )


async def registration_request_id(db: Database, mobile: MobileNumber) -> str | None:
    """The KasPro requestId we registered this number with, if we did."""
    row = await db.fetch_one(
        "SELECT kaspro_request_id FROM customers WHERE mobile_number = ?", (mobile.canonical,)
    )
    return None if row is None else row["kaspro_request_id"]


async def record_registration_attempt(
    db: Database, mobile: MobileNumber, kaspro_request_id: str
) -> None:
    """Save the requestId before sending it (rule 2), unless the number is registered."""
    await db.run(
        lambda tx: tx.execute(
            """INSERT INTO customers (mobile_number, kaspro_request_id) VALUES (?, ?)
               ON CONFLICT (mobile_number) DO UPDATE SET
                   kaspro_request_id = excluded.kaspro_request_id
               WHERE customers.registered_at IS NULL""",
            (mobile.canonical, kaspro_request_id),
        )
    )


async def mark_registered(
    db: Database, mobile: MobileNumber, kaspro_request_id: str, now: float
) -> None:
    await db.run(
        lambda tx: tx.execute(
            """UPDATE customers SET registered_at = COALESCE(registered_at, ?)
               WHERE mobile_number = ? AND kaspro_request_id = ?""",
            (now, mobile.canonical, kaspro_request_id),
        )
    )


async def mark_linked(tx: Transaction, mobile: MobileNumber, now: float) -> float:
    """Record the wallet as linked (once); return when it was linked."""
    await tx.execute(
        """INSERT INTO customers (mobile_number, linked_at) VALUES (?, ?)
           ON CONFLICT (mobile_number) DO UPDATE SET
               linked_at = COALESCE(customers.linked_at, excluded.linked_at)""",
        (mobile.canonical, now),
    )
    row = await tx.fetch_one(
        "SELECT linked_at FROM customers WHERE mobile_number = ?", (mobile.canonical,)
    )
    assert row is not None
    return float(row["linked_at"])


async def mark_kyc_verified(tx: Transaction, mobile: MobileNumber, now: float) -> None:
    await tx.execute(
        """INSERT INTO customers (mobile_number, kyc_verified_at) VALUES (?, ?)
           ON CONFLICT (mobile_number)
           DO UPDATE SET kyc_verified_at = excluded.kyc_verified_at""",
        (mobile.canonical, now),
    )


async def linked_at(source: Database | Transaction, mobile: MobileNumber) -> float | None:
    """When ``mobile``'s wallet was linked, or None if it is not."""
    row = await source.fetch_one(
        "SELECT linked_at FROM customers WHERE mobile_number = ?", (mobile.canonical,)
    )
    return None if row is None else row["linked_at"]

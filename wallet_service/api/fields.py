"""Request validation at the edge: proto fields → domain values, every problem collected."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from google.protobuf.message import Message

from wallet_service.domain.errors import FieldViolation, invalid
from wallet_service.domain.phone import InvalidMobileNumber, MobileNumber, parse_mobile_number

T = TypeVar("T")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_OTP = re.compile(r"[0-9]{4,8}")
_ACCOUNT_NUMBER = re.compile(r"[0-9]{5,20}")


# What the edge found wrong in the request as a whole (``nul_characters``), for the RPC's
# validation to name with the rest: every RPC validates its request with one Fields.
edge_violations: ContextVar[tuple[FieldViolation, ...]] = ContextVar("edge_violations", default=())


class Fields:
    """Collects field violations so one answer names every bad field (AIP-193)."""

    def __init__(self) -> None:
        self._violations: list[FieldViolation] = list(edge_violations.get())

    def bad(self, field: str, description: str) -> None:
        self._violations.append(FieldViolation(field, description))

    def check(self, field: str, problem: str | None) -> None:
        if problem is not None:
            self.bad(field, f"{field} {problem}")

    def done(self) -> None:
        """Raise INVALID_ARGUMENT naming every bad field, if any."""
        if self._violations:
            raise invalid(self._violations)

    def mobile(self, field: str, text: str) -> MobileNumber:
        """A mobile number; on a problem, records it and returns a placeholder."""
        if not text:
            self.bad(field, f"{field} is required")
        else:
            try:
                return parse_mobile_number(text)
            except InvalidMobileNumber as exc:
                self.bad(
                    field,
                    f"{field} must be an Indonesian mobile number (08…, 628… or +628…): {exc}",
                )
        return _PLACEHOLDER

    def request_id(self, text: str) -> str:
        return self.ride_id("request_id", text)  # the same rule

    def ride_id(self, field: str, text: str) -> str:
        if not _REQUEST_ID.fullmatch(text):
            self.bad(field, f"{field} is required: 1-64 characters of [A-Za-z0-9._:-]")
        return text

    def account_number(self, field: str, text: str) -> str:
        if not _ACCOUNT_NUMBER.fullmatch(text):
            self.bad(field, f"{field} must be 5-20 ASCII digits")
        return text

    def otp(self, text: str) -> str:
        if not _OTP.fullmatch(text):
            self.bad("otp", "otp must be 4-8 ASCII digits")
        return text

    def positive_amount(self, field: str, value: int) -> int:
        if value <= 0:
            self.bad(field, f"{field} must be a whole number of rupiah, 1 or more")
        return value

    def apply(self, field: str, value: T, problem: Callable[[T], str | None]) -> T:
        self.check(field, problem(value))
        return value


# Stands in for a bad number until done() raises; never reaches a flow.
_PLACEHOLDER = MobileNumber("8111111111")


def nul_characters(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Every text field of ``message`` (nested ones too) holding a NUL character.

    Protobuf strings may hold one; PostgreSQL's text cannot, and no value of ours has a
    use for it: such a request is refused on both engines, the field named with the
    request's other bad fields, before anything reads the database."""
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        values: list[Any] = list(value) if field.is_repeated else [value]
        for item in values:
            if isinstance(item, Message):
                found.extend(nul_characters(item, f"{name}."))
            elif isinstance(item, str) and "\x00" in item:
                found.append(FieldViolation(name, f"{name} must not contain a NUL character"))
    return found

"""KasPro response codes and messages as the sandbox answers them (see docs/kaspro.md)."""

from __future__ import annotations

SUCCESS = 0
CUSTOMER_NOT_FOUND = 110005
ALREADY_REGISTERED = 110006
INVALID_OTP = 120001
OTP_EXPIRED = 120002
INVALID_IMAGE = 130001
INVALID_REQUEST = 400001
INVALID_SIGNATURE = 401001
INVALID_TOKEN = 401002
DATE_OUT_OF_RANGE = 401003

MESSAGES: dict[int, str] = {
    SUCCESS: "Berhasil",
    CUSTOMER_NOT_FOUND: "Customer not found",
    ALREADY_REGISTERED: "Mobile number already registered",
    INVALID_OTP: "Invalid OTP",
    OTP_EXPIRED: "OTP expired or not requested",
    INVALID_IMAGE: "Invalid image",
    INVALID_SIGNATURE: "Invalid signature",
    INVALID_TOKEN: "Invalid or expired token",
    DATE_OUT_OF_RANGE: "Request date out of range",
}

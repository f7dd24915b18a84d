"""KasPro response codes and messages as the sandbox answers them (see docs/kaspro.md)."""

from __future__ import annotations

SUCCESS = 0
IN_PROCESS = 1
CUSTOMER_NOT_FOUND = 110005
ALREADY_REGISTERED = 110006
INVALID_OTP = 120001
OTP_EXPIRED = 120002
INVALID_IMAGE = 130001
INSUFFICIENT_BALANCE = 140001
LIMIT_EXCEEDED = 140002
TRANSACTION_NOT_FOUND = 150001
# Assumed (docs/sandbox.md): the code of a FAILED callback when no other code applies.
TRANSACTION_FAILED = 150002
INVALID_REQUEST = 400001
INVALID_SIGNATURE = 401001
INVALID_TOKEN = 401002
DATE_OUT_OF_RANGE = 401003

MESSAGES: dict[int, str] = {
    SUCCESS: "Berhasil",
    IN_PROCESS: "In Process",
    CUSTOMER_NOT_FOUND: "Customer not found",
    ALREADY_REGISTERED: "Mobile number already registered",
    INVALID_OTP: "Invalid OTP",
    OTP_EXPIRED: "OTP expired or not requested",
    INVALID_IMAGE: "Invalid image",
    INSUFFICIENT_BALANCE: "Insufficient balance",
    LIMIT_EXCEEDED: "Limit exceeded",
    TRANSACTION_NOT_FOUND: "Transaction not found",
    TRANSACTION_FAILED: "Transaction failed",
    INVALID_SIGNATURE: "Invalid signature",
    INVALID_TOKEN: "Invalid or expired token",
    DATE_OUT_OF_RANGE: "Request date out of range",
}

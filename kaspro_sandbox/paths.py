"""The gateway's paths, exactly as KasPro spells them (docs/kaspro.md), in one place.

The endpoints, the fault rules and the control API all name paths; keeping the strings here
lets the fault model (faults.py) know them without importing the endpoints.
"""

from __future__ import annotations

from typing import Final

TOKEN_PATH: Final = "/authentication-server/oauth/token"
REGISTER_PATH: Final = "/register-customer/"
GET_OTP_PATH: Final = "/pil-partner-get-otp/"
VALIDATE_OTP_PATH: Final = "/validate-otp/"
EKYC_PATH: Final = "/pil-partner/ekyc-upgrade-premium-inquiry/"
ACCOUNT_INQUIRY_PATH: Final = "/customer-account-inquiry/"
GATEWAY_PATHS: Final = (
    TOKEN_PATH,
    REGISTER_PATH,
    GET_OTP_PATH,
    VALIDATE_OTP_PATH,
    EKYC_PATH,
    ACCOUNT_INQUIRY_PATH,
)

PAYMENT_PATH: Final = "/pil-transaction-payment-to-merchant/"
P2P_PATH: Final = "/p2p-transaction/"
BANK_TRANSFER_PATH: Final = "/bank-transfer/"
QRIS_PATH: Final = "/qris-issuer/"
STATUS_PATH: Final = "/transaction-status/"
MONEY_PATHS: Final = (PAYMENT_PATH, P2P_PATH, BANK_TRANSFER_PATH, QRIS_PATH, STATUS_PATH)
# The calls that move money (every money path but the status inquiry).
TRANSFER_PATHS: Final = (PAYMENT_PATH, P2P_PATH, BANK_TRANSFER_PATH, QRIS_PATH)
# The calls whose transfers settle later and are called back.
ASYNC_PATHS: Final = (BANK_TRANSFER_PATH, QRIS_PATH)

# Every partner path a fault rule may name.
FAULTABLE_PATHS: Final = (*GATEWAY_PATHS, *MONEY_PATHS)
# Top-ups are credited through this control path; callback faults may name it.
TOPUP_CONTROL_PATH: Final = "/_sandbox/topup"

"""Top-up and deposit instructions: VA numbers and retail payment codes; bank codes."""

from __future__ import annotations

from dataclasses import dataclass

from wallet_service.domain.phone import MobileNumber

# Bank codes (KASPRO.md): the banks a cash-out may go to, by default.
BANKS: dict[str, str] = {
    "002": "BRI",
    "008": "Mandiri",
    "009": "BNI",
    "011": "Danamon",
    "013": "Permata",
    "014": "BCA",
    "016": "Maybank",
    "022": "CIMB Niaga",
    "028": "OCBC NISP",
    "147": "Muamalat",
    "200": "BTN",
    "451": "BSI",
}

OUTLETS = ("ALFAMART", "INDOMARET")


@dataclass(frozen=True, slots=True)
class VaPrefix:
    bank_code: str
    bank_name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class RetailPrefix:
    outlet: str  # ALFAMART | INDOMARET
    prefix: str
    min_amount_idr: int = 10_000
    max_amount_idr: int = 5_000_000


@dataclass(frozen=True, slots=True)
class VirtualAccount:
    bank_code: str
    bank_name: str
    va_number: str


@dataclass(frozen=True, slots=True)
class RetailCode:
    outlet: str
    payment_code: str
    min_amount_idr: int
    max_amount_idr: int


@dataclass(frozen=True)
class Instructions:
    virtual_accounts: tuple[VirtualAccount, ...]
    retail_codes: tuple[RetailCode, ...]


def instructions(
    mobile: MobileNumber, banks: tuple[VaPrefix, ...], outlets: tuple[RetailPrefix, ...]
) -> Instructions:
    """A VA per bank (prefix + national number) and a payment code per outlet."""
    return Instructions(
        virtual_accounts=tuple(
            VirtualAccount(b.bank_code, b.bank_name, b.prefix + mobile.national) for b in banks
        ),
        retail_codes=tuple(
            RetailCode(o.outlet, o.prefix + mobile.national, o.min_amount_idr, o.max_amount_idr)
            for o in outlets
        ),
    )


DEFAULT_VA_PREFIXES = (
    VaPrefix("014", "BCA", "39358"),
    VaPrefix("008", "Mandiri", "89508"),
    VaPrefix("009", "BNI", "8808"),
    VaPrefix("002", "BRI", "26215"),
)
DEFAULT_DRIVER_VA_PREFIXES = (
    VaPrefix("014", "BCA", "39359"),
    VaPrefix("008", "Mandiri", "89509"),
    VaPrefix("009", "BNI", "8809"),
    VaPrefix("002", "BRI", "26216"),
)
DEFAULT_RETAIL_PREFIXES = (RetailPrefix("ALFAMART", "7010"), RetailPrefix("INDOMARET", "7020"))
DEFAULT_DRIVER_RETAIL_PREFIXES = (
    RetailPrefix("ALFAMART", "7011"),
    RetailPrefix("INDOMARET", "7021"),
)

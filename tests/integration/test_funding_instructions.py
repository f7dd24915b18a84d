"""Top-up and driver-deposit instructions: a VA per bank and a code per retail outlet.

A VA number is the bank's company prefix followed by the customer's national number;
drivers get their own prefixes, so their deposits are told apart (docs/kaspro.md,
"Top-up numbers"). Only a customer KasPro knows can be paid into.
"""

from __future__ import annotations

import grpc
import pytest
from wallet.v1 import common_pb2, funding_service_pb2

from wallet_service.domain.funding import RetailPrefix, VaPrefix

from .conftest import (
    ADMIN,
    APP,
    CANONICAL,
    DEADLINE,
    DISPATCH,
    E164,
    LOCAL,
    NATIONAL,
    PRICING,
    Harness,
    Metadata,
    assert_failure,
    expect_failure,
)

ALFAMART = common_pb2.RETAIL_OUTLET_ALFAMART
INDOMARET = common_pb2.RETAIL_OUTLET_INDOMARET

# The default prefixes (wallet_service/domain/funding.py), written out independently.
PASSENGER_VAS = [
    ("014", "BCA", "39358"),
    ("008", "Mandiri", "89508"),
    ("009", "BNI", "8808"),
    ("002", "BRI", "26215"),
]
DRIVER_VAS = [
    ("014", "BCA", "39359"),
    ("008", "Mandiri", "89509"),
    ("009", "BNI", "8809"),
    ("002", "BRI", "26216"),
]
PASSENGER_OUTLETS = [(ALFAMART, "7010"), (INDOMARET, "7020")]
DRIVER_OUTLETS = [(ALFAMART, "7011"), (INDOMARET, "7021")]
DEFAULT_MIN_IDR, DEFAULT_MAX_IDR = 10_000, 5_000_000

Instructions = (
    funding_service_pb2.GetTopUpInstructionsResponse
    | funding_service_pb2.GetDriverDepositInstructionsResponse
)


async def top_up_instructions(
    h: Harness, mobile: str = LOCAL, metadata: Metadata = APP
) -> funding_service_pb2.GetTopUpInstructionsResponse:
    return await h.funding.GetTopUpInstructions(
        funding_service_pb2.GetTopUpInstructionsRequest(mobile_number=mobile),
        metadata=metadata,
        timeout=DEADLINE,
    )


async def driver_instructions(
    h: Harness, mobile: str = LOCAL, metadata: Metadata = APP
) -> funding_service_pb2.GetDriverDepositInstructionsResponse:
    return await h.funding.GetDriverDepositInstructions(
        funding_service_pb2.GetDriverDepositInstructionsRequest(mobile_number=mobile),
        metadata=metadata,
        timeout=DEADLINE,
    )


def vas(found: Instructions) -> list[tuple[str, str, str]]:
    return [(v.bank_code, v.bank_name, v.va_number) for v in found.virtual_accounts]


def outlets(found: Instructions) -> list[tuple[int, str, int, int]]:
    return [
        (r.outlet, r.payment_code, r.min_amount_idr, r.max_amount_idr) for r in found.retail_outlets
    ]


async def test_top_up_instructions_list_a_va_per_bank_and_a_code_per_outlet(h: Harness) -> None:
    await h.register(LOCAL)

    found = await top_up_instructions(h)

    assert vas(found) == [(code, name, prefix + NATIONAL) for code, name, prefix in PASSENGER_VAS]
    assert outlets(found) == [
        (outlet, prefix + NATIONAL, DEFAULT_MIN_IDR, DEFAULT_MAX_IDR)
        for outlet, prefix in PASSENGER_OUTLETS
    ]
    # Every accepted spelling of the number is the same customer, with the same numbers.
    for spelling in (CANONICAL, E164):
        assert await top_up_instructions(h, spelling) == found
    # A registered but not yet linked wallet can already be paid into; admin may ask too.
    assert await top_up_instructions(h, metadata=ADMIN) == found


async def test_driver_deposit_instructions_use_the_driver_prefixes(h: Harness) -> None:
    await h.register(LOCAL)

    driver = await driver_instructions(h)
    passenger = await top_up_instructions(h)

    assert vas(driver) == [(code, name, prefix + NATIONAL) for code, name, prefix in DRIVER_VAS]
    assert outlets(driver) == [
        (outlet, prefix + NATIONAL, DEFAULT_MIN_IDR, DEFAULT_MAX_IDR)
        for outlet, prefix in DRIVER_OUTLETS
    ]
    # No driver number is a passenger number: a deposit is always told apart.
    driver_numbers = {v.va_number for v in driver.virtual_accounts} | {
        r.payment_code for r in driver.retail_outlets
    }
    passenger_numbers = {v.va_number for v in passenger.virtual_accounts} | {
        r.payment_code for r in passenger.retail_outlets
    }
    assert not driver_numbers & passenger_numbers


@pytest.mark.parametrize("driver", [False, True], ids=["top-up", "driver-deposit"])
async def test_unknown_customer_is_not_found(h: Harness, driver: bool) -> None:
    ask = driver_instructions if driver else top_up_instructions

    failure = await expect_failure(ask(h, LOCAL))

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")


@pytest.mark.parametrize("driver", [False, True], ids=["top-up", "driver-deposit"])
@pytest.mark.parametrize("mobile", ["", "12345", "0812345678901234", "+6281234567890x"])
async def test_a_bad_number_is_invalid_and_never_reaches_kaspro(
    h: Harness, driver: bool, mobile: str
) -> None:
    ask = driver_instructions if driver else top_up_instructions
    before = len(await h.kaspro_requests())

    failure = await expect_failure(ask(h, mobile))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "mobile_number")
    assert len(await h.kaspro_requests()) == before


async def test_configured_prefixes_replace_the_defaults(h: Harness) -> None:
    await h.register(LOCAL)
    await h.restart(
        h.with_config(
            va_prefixes=(VaPrefix("451", "BSI", "90001"), VaPrefix("014", "BCA", "12345")),
            driver_va_prefixes=(VaPrefix("451", "BSI", "90002"),),
            retail_prefixes=(RetailPrefix("INDOMARET", "555", 20_000, 1_000_000),),
            driver_retail_prefixes=(RetailPrefix("ALFAMART", "556", 15_000, 2_000_000),),
        )
    )

    found = await top_up_instructions(h)
    driver = await driver_instructions(h)

    assert vas(found) == [("451", "BSI", "90001" + NATIONAL), ("014", "BCA", "12345" + NATIONAL)]
    assert outlets(found) == [(INDOMARET, "555" + NATIONAL, 20_000, 1_000_000)]
    assert vas(driver) == [("451", "BSI", "90002" + NATIONAL)]
    assert outlets(driver) == [(ALFAMART, "556" + NATIONAL, 15_000, 2_000_000)]


@pytest.mark.parametrize("driver", [False, True], ids=["top-up", "driver-deposit"])
@pytest.mark.parametrize("metadata", [PRICING, DISPATCH], ids=["pricing", "dispatch"])
async def test_only_app_and_admin_may_ask(h: Harness, driver: bool, metadata: Metadata) -> None:
    await h.register(LOCAL)
    ask = driver_instructions if driver else top_up_instructions

    failure = await expect_failure(ask(h, LOCAL, metadata))

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")

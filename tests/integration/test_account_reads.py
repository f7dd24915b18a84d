"""GetAccount and CheckFunds: fresh reads from KasPro, the balance boundary, input checks."""

from __future__ import annotations

import grpc
import pytest
from wallet.v1 import account_service_pb2

from .conftest import (
    APP,
    ARABIC_INDIC_LOCAL,
    CANONICAL,
    DEADLINE,
    DISPATCH,
    E164,
    FULL_WIDTH_LOCAL,
    INQUIRY_PATH,
    LOCAL,
    PRICING,
    Harness,
    Metadata,
    assert_failure,
    expect_failure,
)


async def check_funds(
    h: Harness, amount: int, mobile: str = LOCAL, metadata: Metadata = APP
) -> account_service_pb2.CheckFundsResponse:
    return await h.accounts.CheckFunds(
        account_service_pb2.CheckFundsRequest(mobile_number=mobile, amount_idr=amount),
        metadata=metadata,
        timeout=DEADLINE,
    )


async def test_get_account_of_unknown_customer_is_not_found(h: Harness) -> None:
    failure = await expect_failure(h.get_account())

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    assert len(await h.kaspro_requests(INQUIRY_PATH)) == 1


async def test_check_funds_of_unknown_customer_is_not_found(h: Harness) -> None:
    failure = await expect_failure(check_funds(h, 1))

    assert_failure(failure, grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")


async def test_balance_set_at_kaspro_shows_in_get_account(h: Harness) -> None:
    await h.register()
    await h.set_balance(LOCAL, 150_000)

    account = await h.get_account(E164)

    assert account.balance.available_idr == 150_000
    assert account.balance.pocket_id == "2"

    await h.set_balance(CANONICAL, 1_999_999)
    assert (await h.get_account()).balance.available_idr == 1_999_999


async def test_get_account_reads_kaspro_every_time(h: Harness) -> None:
    await h.register()
    before = len(await h.kaspro_requests(INQUIRY_PATH))

    await h.get_account()
    await h.get_account()

    assert len(await h.kaspro_requests(INQUIRY_PATH)) == before + 2


@pytest.mark.parametrize(
    ("balance", "amount", "sufficient"),
    [
        (25_000, 25_000, True),
        (25_000, 25_001, False),
        (25_000, 1, True),
        (0, 1, False),
        (9_000_000_000_000, 9_000_000_000_000, True),
    ],
)
async def test_check_funds_at_the_boundary(
    h: Harness, balance: int, amount: int, sufficient: bool
) -> None:
    await h.register()
    await h.set_balance(LOCAL, balance)

    answer = await check_funds(h, amount)

    assert answer.sufficient is sufficient
    assert answer.available_idr == balance


@pytest.mark.parametrize("amount", [0, -1, -25_000])
async def test_check_funds_refuses_non_positive_amounts_before_kaspro(
    h: Harness, amount: int
) -> None:
    await h.register()
    before = await h.kaspro_requests()

    failure = await expect_failure(check_funds(h, amount))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "amount_idr")
    assert await h.kaspro_requests() == before


async def test_check_funds_names_every_bad_field(h: Harness) -> None:
    failure = await expect_failure(check_funds(h, 0, mobile="0812"))

    assert_failure(
        failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "mobile_number", "amount_idr"
    )
    assert await h.kaspro_requests() == []


@pytest.mark.parametrize("mobile", ["", "+1 202 555 0100", FULL_WIDTH_LOCAL, ARABIC_INDIC_LOCAL])
async def test_get_account_refuses_a_bad_number_before_kaspro(h: Harness, mobile: str) -> None:
    failure = await expect_failure(h.get_account(mobile))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "mobile_number")
    assert await h.kaspro_requests() == []


@pytest.mark.parametrize("metadata", [PRICING, DISPATCH], ids=["pricing", "dispatch"])
async def test_pricing_and_dispatch_may_read(h: Harness, metadata: Metadata) -> None:
    await h.register()
    await h.set_balance(LOCAL, 10_000)

    assert (await h.get_account(metadata=metadata)).balance.available_idr == 10_000
    answer = await check_funds(h, 10_000, metadata=metadata)
    assert answer.sufficient is True

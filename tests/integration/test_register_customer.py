"""RegisterCustomer: the account it returns, field validation, and idempotency (MONEY-RULES 1)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from wallet.v1 import account_service_pb2, common_pb2

from .conftest import (
    ADMIN,
    APP,
    ARABIC_INDIC_LOCAL,
    CANONICAL,
    DEADLINE,
    E164,
    FULL_WIDTH_LOCAL,
    INQUIRY_PATH,
    LOCAL,
    OTHER_E164,
    OTHER_LOCAL,
    PRICING,
    REGISTER_PATH,
    Harness,
    Metadata,
    assert_failure,
    expect_failure,
    failure_of,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def registration(
    mobile: str = LOCAL, request_id: str = "register-1", **fields: str
) -> account_service_pb2.RegisterCustomerRequest:
    values = {
        "first_name": "Budi",
        "middle_name": "Putra",
        "last_name": "Santoso",
        "email": "budi@example.com",
        "address": "Jl. Merdeka 17",
        "city": "Jakarta",
        "province": "DKI Jakarta",
        "postal_code": "10110",
    }
    values.update(fields)
    return account_service_pb2.RegisterCustomerRequest(
        request_id=request_id, mobile_number=mobile, **values
    )


async def register(
    h: Harness, request: account_service_pb2.RegisterCustomerRequest, metadata: Metadata = APP
) -> account_service_pb2.RegisterCustomerResponse:
    return await h.accounts.RegisterCustomer(request, metadata=metadata, timeout=DEADLINE)


async def test_returns_a_basic_unlinked_account_and_kaspro_has_the_customer(h: Harness) -> None:
    account = (await register(h, registration())).account

    assert account.mobile_number == E164
    assert (account.first_name, account.middle_name, account.last_name) == (
        "Budi",
        "Putra",
        "Santoso",
    )
    assert account.full_name == "Budi Putra Santoso"
    assert account.email == "budi@example.com"
    assert account.account_type == common_pb2.ACCOUNT_TYPE_BASIC
    assert account.account_status == common_pb2.ACCOUNT_STATUS_ACTIVE
    assert account.customer_type == common_pb2.CUSTOMER_TYPE_SUBSCRIBER
    assert account.kyc_status == common_pb2.KYC_STATUS_UNVERIFIED
    assert account.linked is False
    assert not account.HasField("link_time")
    assert account.balance.pocket_id == "2"
    assert account.balance.available_idr == 0

    customer = await h.kaspro_customer(LOCAL)
    assert customer is not None
    assert customer["mobileNumber"] == LOCAL  # KasPro is always sent the local form
    assert (customer["firstName"], customer["middleName"], customer["lastName"]) == (
        "Budi",
        "Putra",
        "Santoso",
    )
    assert customer["email"] == "budi@example.com"
    assert customer["address"] == "Jl. Merdeka 17"
    assert customer["city"] == "Jakarta"
    assert customer["province"] == "DKI Jakarta"
    assert customer["postalCode"] == "10110"
    assert customer["country"] == "ID"
    assert len(await h.kaspro_requests(REGISTER_PATH)) == 1


@pytest.mark.parametrize("form", [LOCAL, CANONICAL, E164])
async def test_every_accepted_form_names_one_customer(h: Harness, form: str) -> None:
    account = (await register(h, registration(form))).account
    assert account.mobile_number == E164

    for other in (LOCAL, CANONICAL, E164):
        assert (await h.get_account(other)).mobile_number == E164
    assert [c["mobileNumber"] for c in await h.kaspro_customers()] == [LOCAL]

    for i, other in enumerate(f for f in (LOCAL, CANONICAL, E164) if f != form):
        again = await expect_failure(register(h, registration(other, request_id=f"again-{i}")))
        assert_failure(again, grpc.StatusCode.ALREADY_EXISTS, "CUSTOMER_ALREADY_REGISTERED")
    assert len(await h.kaspro_customers()) == 1


@pytest.mark.parametrize(
    "mobile",
    [
        pytest.param("", id="empty"),
        pytest.param("12345", id="short"),
        pytest.param("0712345678", id="landline-prefix"),
        pytest.param("0812 3456 7890", id="spaces"),
        pytest.param("0812-3456-7890", id="dashes"),
        pytest.param("+14155552671", id="us-number"),
        pytest.param(FULL_WIDTH_LOCAL, id="full-width-digits"),
        pytest.param(ARABIC_INDIC_LOCAL, id="arabic-indic-digits"),
        pytest.param("081234567890123", id="too-long"),
        pytest.param("08123456", id="too-short"),
        pytest.param("+0812345678901", id="plus-local"),
        pytest.param(" 081234567890", id="leading-space"),
    ],
)
async def test_bad_mobile_number_is_refused_before_kaspro(h: Harness, mobile: str) -> None:
    failure = await expect_failure(register(h, registration(mobile)))

    assert_failure(failure, INVALID, "INVALID_FIELD", "mobile_number")
    assert await h.kaspro_requests() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_name", ""),
        ("first_name", "Budi2"),
        ("first_name", "B" * 51),
        ("first_name", " Budi"),
        ("middle_name", "P4"),
        ("last_name", "S" * 51),
        ("email", "budi"),
        ("email", "budi@example"),
        ("email", "büdi@example.com"),
        ("postal_code", "1011"),
        ("postal_code", "10110a"),
        ("address", "A" * 201),
        ("city", "Jakarta\x00"),
    ],
)
async def test_bad_field_is_named_and_refused_before_kaspro(
    h: Harness, field: str, value: str
) -> None:
    failure = await expect_failure(register(h, registration(**{field: value})))

    assert_failure(failure, INVALID, "INVALID_FIELD", field)
    assert await h.kaspro_requests() == []


async def test_boundary_values_are_accepted(h: Harness) -> None:
    account = (
        await register(
            h,
            registration(
                first_name="B" * 50,
                middle_name="",
                last_name="O'Neil-St. Clair",
                email="",
                postal_code="",
            ),
        )
    ).account
    assert account.first_name == "B" * 50
    assert account.last_name == "O'Neil-St. Clair"


async def test_every_bad_field_is_named_in_one_answer(h: Harness) -> None:
    request = registration(
        "12345",
        request_id="",
        first_name="",
        email="not-an-email",
        postal_code="abc",
    )
    failure = await expect_failure(register(h, request))

    assert_failure(
        failure,
        INVALID,
        "INVALID_FIELD",
        "request_id",
        "mobile_number",
        "first_name",
        "email",
        "postal_code",
    )
    assert await h.kaspro_requests() == []


@pytest.mark.parametrize("request_id", ["", "has space", "x" * 65, "ünïcode"])
async def test_request_id_is_required_and_well_formed(h: Harness, request_id: str) -> None:
    failure = await expect_failure(register(h, registration(request_id=request_id)))

    assert_failure(failure, INVALID, "INVALID_FIELD", "request_id")
    assert await h.kaspro_requests() == []


async def test_a_registered_number_cannot_be_registered_again(h: Harness) -> None:
    await register(h, registration())
    failure = await expect_failure(register(h, registration(request_id="register-2")))

    assert_failure(failure, grpc.StatusCode.ALREADY_EXISTS, "CUSTOMER_ALREADY_REGISTERED")
    customer = await h.kaspro_customer(LOCAL)
    assert customer is not None
    assert customer["firstName"] == "Budi"


async def test_same_request_id_and_request_is_answered_again_without_calling_kaspro(
    h: Harness,
) -> None:
    first = await register(h, registration())
    calls_before = await h.kaspro_requests()
    await h.set_balance(LOCAL, 5_000)  # a fresh read would show this; a replay must not

    second = await register(h, registration())

    assert second == first
    assert second.account.balance.available_idr == 0
    assert await h.kaspro_requests() == calls_before


async def test_a_refusal_is_answered_again_too(h: Harness) -> None:
    await register(h, registration(request_id="first"))
    refused = await expect_failure(register(h, registration(request_id="second")))
    calls_before = await h.kaspro_requests()

    replayed = await expect_failure(register(h, registration(request_id="second")))

    assert (replayed.code, replayed.reason) == (refused.code, refused.reason)
    assert replayed.reason == "CUSTOMER_ALREADY_REGISTERED"
    assert await h.kaspro_requests() == calls_before


async def test_same_request_id_with_a_different_request_is_refused(h: Harness) -> None:
    await register(h, registration())
    calls_before = await h.kaspro_requests()

    failure = await expect_failure(register(h, registration(OTHER_LOCAL)))

    assert_failure(failure, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await h.kaspro_requests() == calls_before
    assert await h.kaspro_customer(OTHER_LOCAL) is None


async def test_idempotency_keys_are_per_caller(h: Harness) -> None:
    by_app = (await register(h, registration(LOCAL, request_id="shared-id"), APP)).account
    by_admin = (await register(h, registration(OTHER_LOCAL, request_id="shared-id"), ADMIN)).account

    assert (by_app.mobile_number, by_admin.mobile_number) == (E164, OTHER_E164)
    assert len(await h.kaspro_requests(REGISTER_PATH)) == 2
    assert {c["mobileNumber"] for c in await h.kaspro_customers()} == {LOCAL, OTHER_LOCAL}


async def test_concurrent_duplicates_make_one_kaspro_call(h: Harness) -> None:
    # Slow KasPro down so that the duplicates really overlap the first call.
    await h.arm_fault(REGISTER_PATH, "delay", delay_seconds=0.3)
    request = registration()

    outcomes = await asyncio.gather(
        *(register(h, request) for _ in range(20)), return_exceptions=True
    )

    accounts = [
        o.account for o in outcomes if isinstance(o, account_service_pb2.RegisterCustomerResponse)
    ]
    errors = [
        o for o in outcomes if not isinstance(o, account_service_pb2.RegisterCustomerResponse)
    ]
    assert accounts, outcomes
    assert all(a == accounts[0] for a in accounts)
    assert accounts[0].mobile_number == E164
    for error in errors:
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert_failure(failure_of(error), grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")
    assert len(await h.kaspro_requests(REGISTER_PATH)) == 1
    assert len(await h.kaspro_customers()) == 1

    # Once decided, every retry gets the same account without another KasPro call.
    assert (await register(h, request)).account == accounts[0]
    assert len(await h.kaspro_requests(REGISTER_PATH)) == 1


async def test_retry_after_provider_unavailable_runs_again(h: Harness) -> None:
    await h.arm_fault(REGISTER_PATH, "http_500")
    failure = await expect_failure(register(h, registration()))
    assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert await h.kaspro_customer(LOCAL) is None

    account = (await register(h, registration())).account

    assert account.mobile_number == E164
    assert len(await h.kaspro_requests(REGISTER_PATH)) == 2


async def test_retry_after_a_timeout_that_kaspro_carried_out_succeeds_once(h: Harness) -> None:
    # KasPro registers the customer, but the answer comes after our KasPro timeout:
    # the outcome is unknown, and the retry with the same request_id must not turn
    # into CUSTOMER_ALREADY_REGISTERED.
    await h.restart(h.with_config(kaspro_timeout_seconds=0.3))
    await h.arm_fault(REGISTER_PATH, "delay", delay_seconds=0.6)
    request = registration()
    failure = await expect_failure(
        h.accounts.RegisterCustomer(request, metadata=APP)  # no caller deadline
    )
    assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert await h.kaspro_customer(LOCAL) is not None

    account = (await h.accounts.RegisterCustomer(request, metadata=APP)).account

    assert account.mobile_number == E164
    registers = await h.kaspro_requests(REGISTER_PATH)
    assert len(registers) == 2
    assert registers[0]["requestId"] == registers[1]["requestId"]
    assert len(await h.kaspro_customers()) == 1


async def test_pricing_may_not_register(h: Harness) -> None:
    failure = await expect_failure(register(h, registration(), PRICING))

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert await h.kaspro_requests() == []


async def test_registration_succeeds_even_when_the_read_back_fails(h: Harness) -> None:
    # KasPro registered the customer, then the account read failed: the registration is
    # the caller's answer (with only what we know ourselves), and a replay repeats it.
    await h.arm_fault(INQUIRY_PATH, "http_500")
    account = (await register(h, registration())).account

    assert account.mobile_number == E164
    assert account.linked is False
    assert not account.HasField("balance")
    assert await h.kaspro_customer(LOCAL) is not None

    again = (await register(h, registration())).account
    assert again == account
    assert len(await h.kaspro_requests(REGISTER_PATH)) == 1

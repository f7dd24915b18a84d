"""Who may call what, and what the edge says to everyone else."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from wallet.v1 import (
    account_service_pb2,
    common_pb2,
    funding_service_pb2,
    payment_service_pb2,
    transaction_service_pb2,
)

from .conftest import (
    ADMIN,
    APP,
    APP_TOKEN,
    DEADLINE,
    DISPATCH,
    EKYC_PATH,
    LOCAL,
    PRICING,
    SELFIE_JPEG,
    Harness,
    Metadata,
    assert_failure,
    expect_failure,
    wait_for,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def get_account_request() -> account_service_pb2.GetAccountRequest:
    return account_service_pb2.GetAccountRequest(mobile_number=LOCAL)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="no-token"),
        pytest.param((("authorization", "Bearer wrong-token-999"),), id="wrong-token"),
        pytest.param((("authorization", f"Basic {APP_TOKEN}"),), id="basic-scheme"),
        pytest.param((("authorization", "Basic x"),), id="basic-x"),
        pytest.param((("authorization", "Bearer"),), id="bearer-without-token"),
        pytest.param((("authorization", APP_TOKEN),), id="token-without-scheme"),
        pytest.param((("authorization", f"Bearer {APP_TOKEN}x"),), id="token-plus-one"),
        pytest.param((("authorization", f"Bearer {APP_TOKEN[:-1]}"),), id="token-prefix"),
        pytest.param(
            (("authorization", f"Bearer {APP_TOKEN}"), ("authorization", f"Bearer {APP_TOKEN}")),
            id="two-headers",
        ),
    ],
)
async def test_callers_without_a_valid_token_are_unauthenticated(
    h: Harness, metadata: Metadata
) -> None:
    await h.register()
    before = await h.kaspro_requests()

    failure = await expect_failure(
        h.accounts.GetAccount(get_account_request(), metadata=metadata, timeout=DEADLINE)
    )

    assert_failure(failure, UNAUTHENTICATED, "UNAUTHENTICATED")
    assert APP_TOKEN not in failure.message
    assert await h.kaspro_requests() == before


@pytest.mark.parametrize(
    "value", [f"bearer {APP_TOKEN}", f"BEARER {APP_TOKEN}", f"Bearer  {APP_TOKEN}"]
)
async def test_bearer_scheme_is_case_insensitive(h: Harness, value: str) -> None:
    await h.register()

    account = await h.get_account(metadata=(("authorization", value),))

    assert account.mobile_number == "+6281234567890"


async def test_overload_is_refused_quickly_with_a_reason(h: Harness) -> None:
    await h.restart(h.with_config(max_concurrent_rpcs=1))
    await h.register()
    await h.arm_fault("/customer-account-inquiry/", "delay", delay_seconds=0.5)
    inquiries = len(await h.kaspro_requests("/customer-account-inquiry/"))
    slow = asyncio.ensure_future(h.get_account())

    async def in_flight() -> bool:
        return len(await h.kaspro_requests("/customer-account-inquiry/")) > inquiries

    await wait_for(in_flight)
    failure = await expect_failure(h.get_account())

    # Refused at once: the slow call it would have queued behind is still running.
    assert not slow.done()
    assert_failure(failure, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
    assert (await slow).mobile_number == "+6281234567890"


async def test_authentication_comes_before_validation(h: Harness) -> None:
    failure = await expect_failure(
        h.accounts.RegisterCustomer(
            account_service_pb2.RegisterCustomerRequest(mobile_number="bad"), timeout=DEADLINE
        )
    )

    assert_failure(failure, UNAUTHENTICATED, "UNAUTHENTICATED")
    assert failure.violations == []


async def test_permission_comes_before_validation(h: Harness) -> None:
    failure = await expect_failure(
        h.accounts.RegisterCustomer(
            account_service_pb2.RegisterCustomerRequest(mobile_number="bad"),
            metadata=PRICING,
            timeout=DEADLINE,
        )
    )

    assert_failure(failure, DENIED, "PERMISSION_DENIED")


async def test_pricing_may_only_read(h: Harness) -> None:
    await h.register()
    await h.set_balance(LOCAL, 100)
    before = await h.kaspro_requests()

    calls: list[Any] = [
        h.accounts.RegisterCustomer(
            account_service_pb2.RegisterCustomerRequest(
                request_id="by-pricing", mobile_number="085712345678", first_name="Sari"
            ),
            metadata=PRICING,
            timeout=DEADLINE,
        ),
        h.accounts.RequestOtp(
            account_service_pb2.RequestOtpRequest(mobile_number=LOCAL),
            metadata=PRICING,
            timeout=DEADLINE,
        ),
        h.accounts.VerifyOtp(
            account_service_pb2.VerifyOtpRequest(mobile_number=LOCAL, otp="123456"),
            metadata=PRICING,
            timeout=DEADLINE,
        ),
        h.accounts.UpgradeKyc(
            account_service_pb2.UpgradeKycRequest(
                request_id="by-pricing",
                mobile_number=LOCAL,
                id_card_image=SELFIE_JPEG,
                selfie_image=SELFIE_JPEG,
                selfie_with_id_card_image=SELFIE_JPEG,
            ),
            metadata=PRICING,
            timeout=DEADLINE,
        ),
    ]
    for call in calls:
        assert_failure(await expect_failure(call), DENIED, "PERMISSION_DENIED")
    assert await h.kaspro_requests() == before

    assert (await h.get_account(metadata=PRICING)).balance.available_idr == 100
    funds = await h.accounts.CheckFunds(
        account_service_pb2.CheckFundsRequest(mobile_number=LOCAL, amount_idr=100),
        metadata=PRICING,
        timeout=DEADLINE,
    )
    assert funds.sufficient is True


@pytest.mark.parametrize("rpc", ["RequestOtp", "VerifyOtp", "RegisterCustomer", "UpgradeKyc"])
async def test_dispatch_may_not_onboard(h: Harness, rpc: str) -> None:
    requests: dict[str, Any] = {
        "RequestOtp": account_service_pb2.RequestOtpRequest(mobile_number=LOCAL),
        "VerifyOtp": account_service_pb2.VerifyOtpRequest(mobile_number=LOCAL, otp="123456"),
        "RegisterCustomer": account_service_pb2.RegisterCustomerRequest(
            request_id="r", mobile_number=LOCAL, first_name="Budi"
        ),
        "UpgradeKyc": account_service_pb2.UpgradeKycRequest(
            request_id="r",
            mobile_number=LOCAL,
            id_card_image=SELFIE_JPEG,
            selfie_image=SELFIE_JPEG,
            selfie_with_id_card_image=SELFIE_JPEG,
        ),
    }

    failure = await expect_failure(
        getattr(h.accounts, rpc)(requests[rpc], metadata=DISPATCH, timeout=DEADLINE)
    )

    assert_failure(failure, DENIED, "PERMISSION_DENIED")
    assert await h.kaspro_requests() == []


async def test_admin_may_do_everything(h: Harness) -> None:
    account = await h.register(metadata=ADMIN)
    assert account.mobile_number == "+6281234567890"
    await h.accounts.RequestOtp(
        account_service_pb2.RequestOtpRequest(mobile_number=LOCAL),
        metadata=ADMIN,
        timeout=DEADLINE,
    )
    verified = await h.accounts.VerifyOtp(
        account_service_pb2.VerifyOtpRequest(mobile_number=LOCAL, otp=await h.otp(LOCAL)),
        metadata=ADMIN,
        timeout=DEADLINE,
    )
    assert verified.account.linked is True
    upgraded = await h.accounts.UpgradeKyc(
        account_service_pb2.UpgradeKycRequest(
            request_id="kyc-by-admin",
            mobile_number=LOCAL,
            id_card_image=SELFIE_JPEG,
            selfie_image=SELFIE_JPEG,
            selfie_with_id_card_image=SELFIE_JPEG,
        ),
        metadata=ADMIN,
        timeout=DEADLINE,
    )
    assert upgraded.kyc_status == common_pb2.KYC_STATUS_VERIFIED
    assert len(await h.kaspro_requests(EKYC_PATH)) == 1
    assert (await h.get_account(metadata=ADMIN)).account_type == common_pb2.ACCOUNT_TYPE_PREMIUM
    funds = await h.accounts.CheckFunds(
        account_service_pb2.CheckFundsRequest(mobile_number=LOCAL, amount_idr=1),
        metadata=ADMIN,
        timeout=DEADLINE,
    )
    assert funds.sufficient is False


async def test_health_and_reflection_need_no_token(h: Harness) -> None:
    health = await h.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    assert h.channel is not None
    reflection = reflection_pb2_grpc.ServerReflectionStub(h.channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=DEADLINE
    )
    services = set()
    async for response in call:
        services |= {s.name for s in response.list_services_response.service}
    assert {
        "wallet.v1.AccountService",
        "wallet.v1.AdminService",
        "wallet.v1.FundingService",
        "wallet.v1.PaymentService",
        "wallet.v1.TransactionService",
        "grpc.health.v1.Health",
    } <= services


# (module, service, method, a caller whose role the contract allows)
def _contract_rpcs() -> list[Any]:
    roles = {
        "GetTopUpInstructions": APP,
        "GetDriverDepositInstructions": APP,
        "CashOut": APP,
        "AuthorizeRidePayment": DISPATCH,
        "CaptureRidePayment": DISPATCH,
        "VoidRidePayment": DISPATCH,
        "GetRidePayment": DISPATCH,
        "TipDriver": DISPATCH,
        "Transfer": APP,
        "PayQris": APP,
        "GetTransaction": APP,
        "ListTransactions": APP,
        "WatchEvents": DISPATCH,
    }
    params = []
    for module, service in (
        (funding_service_pb2, "FundingService"),
        (payment_service_pb2, "PaymentService"),
        (transaction_service_pb2, "TransactionService"),
    ):
        for method in module.DESCRIPTOR.services_by_name[service].methods:
            for who, metadata in (("role", roles[method.name]), ("admin", ADMIN)):
                params.append(
                    pytest.param(module, service, method.name, metadata, id=f"{method.name}-{who}")
                )
    return params


async def call_generic(
    h: Harness, module: ModuleType, service: str, method_name: str, metadata: Metadata
) -> None:
    """Call an RPC of the contract by name with an empty request, draining a stream."""
    method = module.DESCRIPTOR.services_by_name[service].methods_by_name[method_name]
    request_type = getattr(module, method.input_type.name)
    response_type = getattr(module, method.output_type.name)
    path = f"/wallet.v1.{service}/{method_name}"
    assert h.channel is not None
    if method.server_streaming:
        stream = h.channel.unary_stream(
            path,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )(request_type(), metadata=metadata, timeout=DEADLINE)
        async for _ in stream:
            pass
    else:
        await h.channel.unary_unary(
            path,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )(request_type(), metadata=metadata, timeout=DEADLINE)


@pytest.mark.parametrize(
    ("module", "service", "method", "metadata"),
    [p for p in _contract_rpcs() if p.values[2] != "WatchEvents"],  # its empty request is valid
)
async def test_money_rpcs_refuse_an_empty_request_before_kaspro(
    h: Harness, module: ModuleType, service: str, method: str, metadata: Metadata
) -> None:
    failure = await expect_failure(call_generic(h, module, service, method, metadata))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert failure.fields, "the refusal names no field"
    assert await h.kaspro_requests() == []


@pytest.mark.parametrize(
    ("service", "method"),
    [
        ("FundingService", "CashOut"),
        ("PaymentService", "AuthorizeRidePayment"),
        ("TransactionService", "WatchEvents"),
    ],
)
async def test_money_rpcs_check_the_caller(h: Harness, service: str, method: str) -> None:
    module = {
        "FundingService": funding_service_pb2,
        "PaymentService": payment_service_pb2,
        "TransactionService": transaction_service_pb2,
    }[service]

    no_token = await expect_failure(call_generic(h, module, service, method, ()))
    assert_failure(no_token, UNAUTHENTICATED, "UNAUTHENTICATED")
    denied = await expect_failure(call_generic(h, module, service, method, PRICING))
    assert_failure(denied, DENIED, "PERMISSION_DENIED")


async def test_unknown_method_is_unimplemented(h: Harness) -> None:
    assert h.channel is not None
    call = h.channel.unary_unary(
        "/wallet.v1.AccountService/DeleteEverything",
        request_serializer=account_service_pb2.GetAccountRequest.SerializeToString,
        response_deserializer=account_service_pb2.GetAccountResponse.FromString,
    )
    failure = await expect_failure(call(get_account_request(), metadata=ADMIN, timeout=DEADLINE))

    assert failure.code == grpc.StatusCode.UNIMPLEMENTED

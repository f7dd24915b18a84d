"""The edge's two tables: reasons → gRPC statuses (AIP-193), and RPCs → caller roles."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import grpc
import pytest
import wallet.v1
from google.rpc import code_pb2, error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from wallet_service.api.auth import PERMISSIONS, Authenticator
from wallet_service.api.errors import CODES, DOMAIN, internal_status, to_status
from wallet_service.config import Caller
from wallet_service.domain.errors import FieldViolation, Reason, WalletError, invalid
from wallet_service.domain.otp import OtpLimits, OtpState, check_can_send, check_not_locked

# ARCHITECTURE.md, "The gRPC contract": the AIP-193 table.
C = grpc.StatusCode
EXPECTED_CODES: dict[Reason, grpc.StatusCode] = {
    Reason.INVALID_FIELD: C.INVALID_ARGUMENT,
    Reason.CUSTOMER_NOT_FOUND: C.NOT_FOUND,
    Reason.RIDE_PAYMENT_NOT_FOUND: C.NOT_FOUND,
    Reason.TRANSACTION_NOT_FOUND: C.NOT_FOUND,
    Reason.ATTEMPT_NOT_FOUND: C.NOT_FOUND,
    Reason.CALLBACK_NOT_FOUND: C.NOT_FOUND,
    Reason.DRIFT_NOT_FOUND: C.NOT_FOUND,
    Reason.CUSTOMER_ALREADY_REGISTERED: C.ALREADY_EXISTS,
    Reason.IDEMPOTENCY_KEY_REUSED: C.ALREADY_EXISTS,
    Reason.REQUEST_IN_PROGRESS: C.ABORTED,
    Reason.WALLET_NOT_LINKED: C.FAILED_PRECONDITION,
    Reason.KYC_REQUIRED: C.FAILED_PRECONDITION,
    Reason.INSUFFICIENT_FUNDS: C.FAILED_PRECONDITION,
    Reason.LIMIT_EXCEEDED: C.FAILED_PRECONDITION,
    Reason.INVALID_STATE: C.FAILED_PRECONDITION,
    Reason.OTP_EXPIRED: C.FAILED_PRECONDITION,
    Reason.OTP_INVALID: C.FAILED_PRECONDITION,
    Reason.OTP_RATE_LIMITED: C.RESOURCE_EXHAUSTED,
    Reason.OTP_LOCKED: C.RESOURCE_EXHAUSTED,
    Reason.PROVIDER_UNAVAILABLE: C.UNAVAILABLE,
    Reason.UNAUTHENTICATED: C.UNAUTHENTICATED,
    Reason.PERMISSION_DENIED: C.PERMISSION_DENIED,
    # Not in the table; these follow from what the reasons mean.
    Reason.IMAGE_REJECTED: C.INVALID_ARGUMENT,  # a bad input field (the photo)
    Reason.PROVIDER_REJECTED: C.FAILED_PRECONDITION,  # KasPro refused: retrying won't help
    Reason.OVERLOADED: C.RESOURCE_EXHAUSTED,  # load shedding, retry later
    Reason.DATABASE_BUSY: C.UNAVAILABLE,  # transient, a retry may succeed
}


def decode(details: bytes) -> tuple[Any, list[Any]]:
    """The google.rpc.Status and its unpacked detail messages."""
    status = status_pb2.Status.FromString(details)
    unpacked: list[Any] = []
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked.append(message)
                break
        else:
            raise AssertionError(f"unexpected detail {detail.type_url}")
    return status, unpacked


def of_type(details: list[Any], kind: type) -> list[Any]:
    return [d for d in details if isinstance(d, kind)]


# Reasons → statuses.


def test_every_reason_has_a_code() -> None:
    assert set(CODES) == set(Reason)


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.value)
def test_each_reason_maps_to_its_aip193_code(reason: Reason) -> None:
    code, message, details = to_status(WalletError(reason, "refused"))
    assert code is EXPECTED_CODES[reason]
    assert message == "refused"
    status, unpacked = decode(details)
    assert status.code == code.value[0]
    assert status.message == "refused"
    (info,) = of_type(unpacked, error_details_pb2.ErrorInfo)
    assert info.domain == DOMAIN == "wallet.v1"
    assert info.reason == reason.value
    assert isinstance(unpacked[0], error_details_pb2.ErrorInfo)


def test_no_reason_maps_to_internal_or_unknown() -> None:
    assert not {C.INTERNAL, C.UNKNOWN, C.OK} & set(CODES.values())


def test_a_plain_error_carries_only_error_info() -> None:
    _, _, details = to_status(WalletError(Reason.CUSTOMER_NOT_FOUND, "no such customer"))
    _, unpacked = decode(details)
    assert [type(d) for d in unpacked] == [error_details_pb2.ErrorInfo]
    assert dict(unpacked[0].metadata) == {}


def test_error_info_carries_the_metadata() -> None:
    error = WalletError(
        Reason.LIMIT_EXCEEDED, "over the monthly limit", metadata={"limit_idr": "40000000"}
    )
    _, _, details = to_status(error)
    _, unpacked = decode(details)
    (info,) = of_type(unpacked, error_details_pb2.ErrorInfo)
    assert dict(info.metadata) == {"limit_idr": "40000000"}


def test_field_violations_become_bad_request() -> None:
    error = invalid(
        [
            FieldViolation("mobile_number", "must be an Indonesian mobile number"),
            FieldViolation("email", "must be an email address like name@example.com"),
        ]
    )
    code, message, details = to_status(error)
    assert code is C.INVALID_ARGUMENT
    assert message == "invalid fields: mobile_number, email"
    _, unpacked = decode(details)
    (bad,) = of_type(unpacked, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("mobile_number", "must be an Indonesian mobile number"),
        ("email", "must be an email address like name@example.com"),
    ]
    (info,) = of_type(unpacked, error_details_pb2.ErrorInfo)
    assert info.reason == "INVALID_FIELD"
    assert not of_type(unpacked, error_details_pb2.RetryInfo)


@pytest.mark.parametrize(
    ("seconds", "delay_ms"),
    [(60.0, 60_000), (1.5, 1_500), (0.0004, 1), (0.0, 1), (1799.9996, 1_800_000)],
)
def test_retry_after_becomes_retry_info(seconds: float, delay_ms: int) -> None:
    error = WalletError(Reason.OTP_RATE_LIMITED, "wait", retry_after_seconds=seconds)
    _, _, details = to_status(error)
    _, unpacked = decode(details)
    (retry,) = of_type(unpacked, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == delay_ms


def test_otp_refusals_reach_the_caller_as_resource_exhausted_with_retry_info() -> None:
    now = 1_700_000_000.0
    with pytest.raises(WalletError) as rate_limited:
        check_can_send(OtpState(last_sent_at=now - 15), [now - 15], now, OtpLimits())
    with pytest.raises(WalletError) as locked:
        check_not_locked(OtpState(locked_until=now + 1800), now)
    for error, reason, delay_ms in [
        (rate_limited.value, "OTP_RATE_LIMITED", 45_000),
        (locked.value, "OTP_LOCKED", 1_800_000),
    ]:
        code, _, details = to_status(error)
        assert code is C.RESOURCE_EXHAUSTED
        _, unpacked = decode(details)
        (info,) = of_type(unpacked, error_details_pb2.ErrorInfo)
        assert info.reason == reason
        (retry,) = of_type(unpacked, error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToMilliseconds() == delay_ms


@given(
    st.sampled_from(list(Reason)),
    st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=3),
    st.none() | st.floats(0, 1e6, allow_nan=False),
)
def test_details_follow_the_error(
    reason: Reason, violations: list[tuple[str, str]], retry: float | None
) -> None:
    error = WalletError(
        reason,
        "refused",
        [FieldViolation(f, d) for f, d in violations],
        retry_after_seconds=retry,
    )
    _, _, details = to_status(error)
    _, unpacked = decode(details)
    assert len(of_type(unpacked, error_details_pb2.ErrorInfo)) == 1
    assert len(of_type(unpacked, error_details_pb2.BadRequest)) == (1 if violations else 0)
    assert len(of_type(unpacked, error_details_pb2.RetryInfo)) == (0 if retry is None else 1)


def test_internal_status_says_only_where_to_look() -> None:
    code, message, details = internal_status("abc123def456")
    assert code is C.INTERNAL
    assert message == "internal error (incident abc123def456)"
    status = status_pb2.Status.FromString(details)
    assert status.code == code_pb2.INTERNAL
    assert status.message == message
    assert len(status.details) == 0


# RPCs → roles (ARCHITECTURE.md, "Callers and their rights").


def contract_methods() -> dict[str, tuple[bool, bool]]:
    """Every RPC of the generated wallet.v1 descriptors: path → (client, server) streaming."""
    methods: dict[str, tuple[bool, bool]] = {}
    modules = [m.name for m in pkgutil.iter_modules(wallet.v1.__path__)]
    for name in modules:
        if not name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"wallet.v1.{name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = (
                    method.client_streaming,
                    method.server_streaming,
                )
    return methods


METHODS = contract_methods()

# What each RPC is, in the words of "Callers and their rights".
KIND = {
    "AccountService/RegisterCustomer": "onboarding",
    "AccountService/RequestOtp": "onboarding",
    "AccountService/VerifyOtp": "onboarding",
    "AccountService/UpgradeKyc": "onboarding",
    "AccountService/GetAccount": "funds read",
    "AccountService/CheckFunds": "funds read",
    "FundingService/GetTopUpInstructions": "funding",
    "FundingService/GetDriverDepositInstructions": "funding",
    "FundingService/CashOut": "cash-out",
    "PaymentService/AuthorizeRidePayment": "ride payment",
    "PaymentService/CaptureRidePayment": "ride payment",
    "PaymentService/VoidRidePayment": "ride payment",
    "PaymentService/GetRidePayment": "read",
    "PaymentService/TipDriver": "tip",
    "PaymentService/Transfer": "P2P",
    "PaymentService/PayQris": "QRIS",
    "TransactionService/GetTransaction": "read",
    "TransactionService/ListTransactions": "read",
    "TransactionService/WatchEvents": "events",
    "AdminService/ListUnresolvedAttempts": "operator",
    "AdminService/ListFrozenOperations": "operator",
    "AdminService/ListDrifts": "operator",
    "AdminService/ListParkedCallbacks": "operator",
    "AdminService/InquireAttempt": "operator",
    "AdminService/ResolveFrozenOperation": "operator",
    "AdminService/RetryParkedCallback": "operator",
    "AdminService/AcknowledgeDrift": "operator",
}
RIGHTS = {
    "app": {"onboarding", "funding", "cash-out", "P2P", "QRIS", "read", "funds read"},
    "dispatch": {"ride payment", "tip", "read", "funds read", "events"},
    "pricing": {"funds read"},
    "admin": set(KIND.values()),
}


def may_call(role: str, method: str) -> bool:
    return KIND[method.removeprefix("/wallet.v1.")] in RIGHTS[role]


def test_the_generated_descriptors_are_found() -> None:
    services = {path.split("/")[1] for path in METHODS}
    assert services == {
        "wallet.v1.AdminService",
        "wallet.v1.AccountService",
        "wallet.v1.FundingService",
        "wallet.v1.PaymentService",
        "wallet.v1.TransactionService",
    }
    assert METHODS["/wallet.v1.TransactionService/WatchEvents"] == (False, True)


def test_permissions_cover_exactly_the_rpcs_of_the_contract() -> None:
    missing = set(METHODS) - set(PERMISSIONS)
    stale = set(PERMISSIONS) - set(METHODS)
    assert not missing, f"RPCs without permissions: {sorted(missing)}"
    assert not stale, f"permissions for RPCs that do not exist: {sorted(stale)}"


def test_every_rpc_has_a_kind_in_this_test() -> None:
    assert {f"/wallet.v1.{name}" for name in KIND} == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_roles_allowed_per_rpc(method: str) -> None:
    expected = {role for role in RIGHTS if may_call(role, method)}
    assert set(PERMISSIONS[method]) == expected


@pytest.mark.parametrize("role", sorted(RIGHTS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_authorize_follows_the_roles(role: str, method: str) -> None:
    caller = Caller(f"a-{role}", frozenset({role}))
    if may_call(role, method):
        Authenticator.authorize(caller, method)
    else:
        with pytest.raises(WalletError) as caught:
            Authenticator.authorize(caller, method)
        assert caught.value.reason is Reason.PERMISSION_DENIED
        assert to_status(caught.value)[0] is C.PERMISSION_DENIED
        assert method.rsplit("/", 1)[-1] in caught.value.message


def test_a_caller_with_several_roles_gets_the_union() -> None:
    caller = Caller("combo", frozenset({"pricing", "dispatch"}))
    Authenticator.authorize(caller, "/wallet.v1.AccountService/CheckFunds")
    Authenticator.authorize(caller, "/wallet.v1.PaymentService/TipDriver")
    with pytest.raises(WalletError):
        Authenticator.authorize(caller, "/wallet.v1.PaymentService/Transfer")


def test_a_caller_without_roles_may_call_nothing() -> None:
    caller = Caller("nobody", frozenset())
    for method in METHODS:
        with pytest.raises(WalletError):
            Authenticator.authorize(caller, method)


@pytest.mark.parametrize(
    "method",
    ["/wallet.v1.AccountService/DeleteCustomer", "/wallet.v2.AccountService/GetAccount", ""],
)
def test_unknown_methods_are_for_admins_only(method: str) -> None:
    Authenticator.authorize(Caller("ops", frozenset({"admin"})), method)
    for role in ("app", "dispatch", "pricing"):
        with pytest.raises(WalletError) as caught:
            Authenticator.authorize(Caller(role, frozenset({role})), method)
        assert caught.value.reason is Reason.PERMISSION_DENIED


# Tokens → callers.

APP = Caller("app", frozenset({"app"}))
DISPATCH = Caller("dispatch", frozenset({"dispatch"}))
AUTH = Authenticator({"app-token-123": APP, "dispatch-token-1": DISPATCH})


@pytest.mark.parametrize(
    ("metadata", "caller"),
    [
        ([("authorization", "Bearer app-token-123")], APP),
        ([("authorization", "bearer app-token-123")], APP),
        ([("authorization", "BEARER dispatch-token-1")], DISPATCH),
        ([("authorization", "Bearer  app-token-123 ")], APP),
        ([("x-request-id", "r1"), ("authorization", "Bearer dispatch-token-1")], DISPATCH),
    ],
)
def test_a_known_bearer_token_is_its_caller(
    metadata: list[tuple[str, str | bytes]], caller: Caller
) -> None:
    assert AUTH.authenticate(metadata) == caller


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([], id="no-metadata"),
        pytest.param([("x-api-key", "app-token-123")], id="other-header"),
        pytest.param([("authorization", "app-token-123")], id="no-scheme"),
        pytest.param([("authorization", "Basic app-token-123")], id="basic-scheme"),
        pytest.param([("authorization", "Bearer")], id="scheme-only"),
        pytest.param([("authorization", "Bearer ")], id="empty-token"),
        pytest.param([("authorization", "Bearer app-token-12")], id="prefix-of-token"),
        pytest.param([("authorization", "Bearer app-token-1234")], id="longer-token"),
        pytest.param([("authorization", "Bearer APP-TOKEN-123")], id="token-case"),
        pytest.param([("authorization", b"Bearer app-token-123")], id="binary-value"),
        pytest.param(
            [("authorization", "Bearer app-token-123"), ("authorization", "Bearer x")],
            id="two-headers",
        ),
        pytest.param(
            [("authorization", "Bearer app-token-123")] * 2,
            id="same-header-twice",
        ),
    ],
)
def test_anything_else_is_unauthenticated(metadata: list[tuple[str, str | bytes]]) -> None:
    with pytest.raises(WalletError) as caught:
        AUTH.authenticate(metadata)
    assert caught.value.reason is Reason.UNAUTHENTICATED
    assert "app-token-123" not in caught.value.message
    assert to_status(caught.value)[0] is C.UNAUTHENTICATED


def test_an_authenticator_without_callers_lets_no_one_in() -> None:
    with pytest.raises(WalletError):
        Authenticator({}).authenticate([("authorization", "Bearer ")])


def test_a_token_identifies_only_its_own_caller() -> None:
    auth = Authenticator({"token-a": APP, "token-ab": DISPATCH})
    assert auth.authenticate([("authorization", "Bearer token-a")]) == APP
    assert auth.authenticate([("authorization", "Bearer token-ab")]) == DISPATCH
    for wrong in ("token-", "token-abc", "TOKEN-A", "token-b"):
        with pytest.raises(WalletError) as caught:
            auth.authenticate([("authorization", f"Bearer {wrong}")])
        assert caught.value.reason is Reason.UNAUTHENTICATED, wrong

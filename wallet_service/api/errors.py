"""The one place where domain errors become gRPC statuses (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from wallet_service.domain.errors import Reason, WalletError

DOMAIN = "wallet.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

CODES: dict[Reason, grpc.StatusCode] = {
    Reason.INVALID_FIELD: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.IMAGE_REJECTED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.CUSTOMER_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.RIDE_PAYMENT_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.TRANSACTION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.ATTEMPT_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.CALLBACK_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.DRIFT_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.CUSTOMER_ALREADY_REGISTERED: grpc.StatusCode.ALREADY_EXISTS,
    Reason.IDEMPOTENCY_KEY_REUSED: grpc.StatusCode.ALREADY_EXISTS,
    Reason.REQUEST_IN_PROGRESS: grpc.StatusCode.ABORTED,
    Reason.WALLET_NOT_LINKED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.KYC_REQUIRED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.INSUFFICIENT_FUNDS: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.LIMIT_EXCEEDED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.INVALID_STATE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.OTP_EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.OTP_INVALID: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.PROVIDER_REJECTED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.OTP_RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.OTP_LOCKED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.PROVIDER_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.DATABASE_BUSY: grpc.StatusCode.UNAVAILABLE,
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


def to_status(error: WalletError) -> tuple[grpc.StatusCode, str, bytes]:
    """(code, message, serialized google.rpc.Status) for a domain error."""
    code = CODES[error.reason]
    status = status_pb2.Status(code=code.value[0], message=error.message)
    info = error_details_pb2.ErrorInfo(
        reason=error.reason.value, domain=DOMAIN, metadata=dict(error.metadata)
    )
    status.details.add().Pack(info)
    if error.violations:
        bad = error_details_pb2.BadRequest()
        for violation in error.violations:
            bad.field_violations.add(field=violation.field, description=violation.description)
        status.details.add().Pack(bad)
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(error.retry_after_seconds * 1000)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return code, error.message, status.SerializeToString()


def internal_status(incident: str) -> tuple[grpc.StatusCode, str, bytes]:
    """An INTERNAL status that says nothing but where to look in our logs."""
    message = f"internal error (incident {incident})"
    status = status_pb2.Status(code=code_pb2.INTERNAL, message=message)
    return grpc.StatusCode.INTERNAL, message, status.SerializeToString()

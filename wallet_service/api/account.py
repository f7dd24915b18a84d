"""AccountService: onboarding and account reads, translated to and from protobuf."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from wallet.v1 import account_service_pb2 as pb
from wallet.v1 import account_service_pb2_grpc as pb_grpc
from wallet.v1 import common_pb2

from wallet_service.api import convert
from wallet_service.api.auth import current_caller
from wallet_service.api.fields import Fields
from wallet_service.api.idempotent import keyed
from wallet_service.domain.customer import (
    NewCustomer,
    email_problem,
    name_problem,
    postal_code_problem,
    text_problem,
)
from wallet_service.domain.images import image_problem
from wallet_service.domain.nik import mask_nik
from wallet_service.flows.idempotency import Held, Idempotency
from wallet_service.flows.onboarding import Onboarding

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


# Stop waiting for KasPro this long before the caller's deadline, so the caller gets
# our answer (PROVIDER_UNAVAILABLE) rather than a bare DEADLINE_EXCEEDED.
_ANSWER_MARGIN_SECONDS = 0.05


def time_left(context: ServicerContext) -> float | None:
    """Seconds left for KasPro calls on the caller's deadline (None: no deadline)."""
    remaining: float | None = context.time_remaining()
    return None if remaining is None else remaining - _ANSWER_MARGIN_SECONDS


def upgrade_kept(answer: pb.UpgradeKycResponse) -> pb.UpgradeKycResponse:
    """What a retry of UpgradeKyc gets: the OCR identity reduced to the NIK masked as the
    logs mask it and its check. The caller needs the KTP identity once; kept for the
    retention of request_ids it would be every customer's KTP in our database."""
    identity = answer.identity
    kept = pb.UpgradeKycResponse()
    kept.CopyFrom(answer)
    kept.identity.CopyFrom(
        common_pb2.KycIdentity(
            id_card_number=mask_nik(identity.id_card_number),
            id_card_number_valid=identity.id_card_number_valid,
            id_card_number_problem=identity.id_card_number_problem,
        )
    )
    return kept


async def reduce_stored_answers(idempotency: Idempotency) -> int:
    """Reduce the UpgradeKyc answers that versions before ``upgrade_kept`` stored whole;
    return how many changed (none the second time)."""

    def reduce(stored: bytes) -> bytes:
        answer = pb.UpgradeKycResponse.FromString(stored)
        smaller = upgrade_kept(answer)
        return stored if smaller == answer else smaller.SerializeToString()

    return await idempotency.rewrite_answers("UpgradeKyc", reduce)


class AccountServicer(pb_grpc.AccountServiceServicer):
    def __init__(
        self, onboarding: Onboarding, idempotency: Idempotency, max_image_bytes: int
    ) -> None:
        self._flow = onboarding
        self._idempotency = idempotency
        self._max_image_bytes = max_image_bytes

    async def RegisterCustomer(
        self, request: pb.RegisterCustomerRequest, context: ServicerContext
    ) -> pb.RegisterCustomerResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        customer = NewCustomer(
            mobile_number=f.mobile("mobile_number", request.mobile_number),
            first_name=f.apply(
                "first_name", request.first_name, lambda v: name_problem(v, required=True)
            ),
            middle_name=f.apply(
                "middle_name", request.middle_name, lambda v: name_problem(v, required=False)
            ),
            last_name=f.apply(
                "last_name", request.last_name, lambda v: name_problem(v, required=False)
            ),
            email=f.apply("email", request.email, email_problem),
            address=f.apply("address", request.address, lambda v: text_problem(v, max_length=200)),
            city=f.apply("city", request.city, lambda v: text_problem(v, max_length=100)),
            province=f.apply(
                "province", request.province, lambda v: text_problem(v, max_length=100)
            ),
            postal_code=f.apply("postal_code", request.postal_code, postal_code_problem),
        )
        f.done()

        async def register(_: Held) -> pb.RegisterCustomerResponse:
            wallet = await self._flow.register(
                current_caller.get().name, request_id, customer, timeout=time_left(context)
            )
            return pb.RegisterCustomerResponse(account=convert.account(wallet))

        return await self._idempotency.run(
            keyed("RegisterCustomer", request, request_id),
            register,
            keep=pb.RegisterCustomerResponse.SerializeToString,
            replay=lambda decided: pb.RegisterCustomerResponse.FromString(decided.answer),
        )

    async def RequestOtp(
        self, request: pb.RequestOtpRequest, context: ServicerContext
    ) -> pb.RequestOtpResponse:
        f = Fields()
        mobile = f.mobile("mobile_number", request.mobile_number)
        f.done()
        sent = await self._flow.request_otp(mobile, timeout=time_left(context))
        return pb.RequestOtpResponse(
            expires_in_seconds=sent.expires_in_seconds,
            resend_after_seconds=sent.resend_after_seconds,
        )

    async def VerifyOtp(
        self, request: pb.VerifyOtpRequest, context: ServicerContext
    ) -> pb.VerifyOtpResponse:
        f = Fields()
        mobile = f.mobile("mobile_number", request.mobile_number)
        otp = f.otp(request.otp)
        f.done()
        wallet = await self._flow.verify_otp(mobile, otp, timeout=time_left(context))
        return pb.VerifyOtpResponse(account=convert.account(wallet))

    async def UpgradeKyc(
        self, request: pb.UpgradeKycRequest, context: ServicerContext
    ) -> pb.UpgradeKycResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        mobile = f.mobile("mobile_number", request.mobile_number)
        for name in ("id_card_image", "selfie_image", "selfie_with_id_card_image"):
            f.check(name, image_problem(getattr(request, name), max_bytes=self._max_image_bytes))
        f.done()

        async def upgrade(_: Held) -> pb.UpgradeKycResponse:
            result = await self._flow.upgrade_kyc(
                current_caller.get().name,
                request_id,
                mobile,
                request.id_card_image,
                request.selfie_image,
                request.selfie_with_id_card_image,
                timeout=time_left(context),
            )
            account = convert.account(result.account)
            return pb.UpgradeKycResponse(
                # KasPro accepted the eKYC; its answer is synchronous (docs/kaspro.md).
                kyc_status=account.kyc_status or common_pb2.KYC_STATUS_VERIFIED,
                identity=convert.kyc_identity(result.identity, result.nik_problem),
                account=account,
            )

        return await self._idempotency.run(
            keyed("UpgradeKyc", request, request_id),
            upgrade,
            keep=lambda answer: upgrade_kept(answer).SerializeToString(),
            replay=lambda decided: pb.UpgradeKycResponse.FromString(decided.answer),
        )

    async def GetAccount(
        self, request: pb.GetAccountRequest, context: ServicerContext
    ) -> pb.GetAccountResponse:
        f = Fields()
        mobile = f.mobile("mobile_number", request.mobile_number)
        f.done()
        wallet = await self._flow.account(mobile, timeout=time_left(context))
        return pb.GetAccountResponse(account=convert.account(wallet))

    async def CheckFunds(
        self, request: pb.CheckFundsRequest, context: ServicerContext
    ) -> pb.CheckFundsResponse:
        f = Fields()
        mobile = f.mobile("mobile_number", request.mobile_number)
        amount = f.positive_amount("amount_idr", request.amount_idr)
        f.done()
        available = await self._flow.available_balance(mobile, timeout=time_left(context))
        return pb.CheckFundsResponse(sufficient=available >= amount, available_idr=available)

"""FundingService: top-up and deposit instructions, and cash-out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import grpc
from wallet.v1 import common_pb2
from wallet.v1 import funding_service_pb2 as pb
from wallet.v1 import funding_service_pb2_grpc as pb_grpc

from wallet_service.api import convert
from wallet_service.api.account import time_left
from wallet_service.api.fields import Fields
from wallet_service.api.idempotent import keyed
from wallet_service.domain.customer import account_name_problem
from wallet_service.domain.funding import Instructions
from wallet_service.flows.external import BankAccount, ExternalPayments
from wallet_service.flows.funding import Funding

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_OUTLETS = {
    common_pb2.RETAIL_OUTLET_ALFAMART: "ALFAMART",
    common_pb2.RETAIL_OUTLET_INDOMARET: "INDOMARET",
}


def _virtual_accounts(found: Instructions) -> list[pb.VirtualAccount]:
    return [
        pb.VirtualAccount(bank_code=v.bank_code, bank_name=v.bank_name, va_number=v.va_number)
        for v in found.virtual_accounts
    ]


def _retail_codes(found: Instructions) -> list[pb.RetailPaymentCode]:
    return [
        pb.RetailPaymentCode(
            outlet=convert.OUTLETS[r.outlet],
            payment_code=r.payment_code,
            min_amount_idr=r.min_amount_idr,
            max_amount_idr=r.max_amount_idr,
        )
        for r in found.retail_codes
    ]


class FundingServicer(pb_grpc.FundingServiceServicer):
    def __init__(
        self, funding: Funding, external: ExternalPayments, banks: Mapping[str, str]
    ) -> None:
        self._funding = funding
        self._external = external
        self._banks = banks

    async def GetTopUpInstructions(
        self, request: pb.GetTopUpInstructionsRequest, context: ServicerContext
    ) -> pb.GetTopUpInstructionsResponse:
        f = Fields()
        mobile = f.mobile("mobile_number", request.mobile_number)
        f.done()
        found = await self._funding.instructions(mobile, driver=False, timeout=time_left(context))
        return pb.GetTopUpInstructionsResponse(
            virtual_accounts=_virtual_accounts(found), retail_outlets=_retail_codes(found)
        )

    async def GetDriverDepositInstructions(
        self, request: pb.GetDriverDepositInstructionsRequest, context: ServicerContext
    ) -> pb.GetDriverDepositInstructionsResponse:
        f = Fields()
        mobile = f.mobile("mobile_number", request.mobile_number)
        f.done()
        found = await self._funding.instructions(mobile, driver=True, timeout=time_left(context))
        return pb.GetDriverDepositInstructionsResponse(
            virtual_accounts=_virtual_accounts(found), retail_outlets=_retail_codes(found)
        )

    async def CashOut(
        self, request: pb.CashOutRequest, context: ServicerContext
    ) -> pb.CashOutResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        mobile = f.mobile("mobile_number", request.mobile_number)
        amount = f.positive_amount("amount_idr", request.amount_idr)
        bank: BankAccount | None = None
        outlet: str | None = None
        destination = request.WhichOneof("destination")
        if destination == "bank_account":
            account = request.bank_account
            if account.bank_code not in self._banks:
                f.bad(
                    "bank_account.bank_code",
                    "bank_account.bank_code must be one of " + ", ".join(sorted(self._banks)),
                )
            number = f.account_number("bank_account.account_number", account.account_number)
            f.check("bank_account.account_name", account_name_problem(account.account_name))
            bank = BankAccount(account.bank_code, number, account.account_name)
        elif destination == "retail_outlet":
            outlet = _OUTLETS.get(request.retail_outlet)
            if outlet is None:
                f.bad("retail_outlet", "retail_outlet must be RETAIL_OUTLET_ALFAMART or _INDOMARET")
        else:
            f.bad("destination", "set bank_account or retail_outlet")
        f.done()
        transaction = await self._external.cash_out(
            keyed("CashOut", request, request_id),
            mobile,
            amount,
            bank=bank,
            outlet=outlet,
            timeout=time_left(context),
        )
        return pb.CashOutResponse(transaction=convert.transaction(transaction))

"""PaymentService: ride payments, tips, transfers and QRIS, translated to and from protobuf."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from wallet.v1 import payment_service_pb2 as pb
from wallet.v1 import payment_service_pb2_grpc as pb_grpc

from wallet_service.api import convert
from wallet_service.api.account import time_left
from wallet_service.api.fields import Fields
from wallet_service.api.idempotent import keyed
from wallet_service.domain.customer import text_problem
from wallet_service.domain.qris import InvalidQris, QrisAmountError, amount_to_pay, parse_qris
from wallet_service.flows.external import ExternalPayments
from wallet_service.flows.rides import RidePayments
from wallet_service.flows.transfers import Transfers

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class PaymentServicer(pb_grpc.PaymentServiceServicer):
    def __init__(
        self, rides: RidePayments, transfers: Transfers, external: ExternalPayments
    ) -> None:
        self._rides = rides
        self._transfers = transfers
        self._external = external

    async def AuthorizeRidePayment(
        self, request: pb.AuthorizeRidePaymentRequest, context: ServicerContext
    ) -> pb.AuthorizeRidePaymentResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        ride_id = f.ride_id("ride_id", request.ride_id)
        passenger = f.mobile("passenger_mobile_number", request.passenger_mobile_number)
        amount = f.positive_amount("amount_idr", request.amount_idr)
        f.done()
        ride = await self._rides.authorize(
            keyed("AuthorizeRidePayment", request, request_id),
            ride_id,
            passenger,
            amount,
            timeout=time_left(context),
        )
        return pb.AuthorizeRidePaymentResponse(ride_payment=convert.ride_payment(ride))

    async def CaptureRidePayment(
        self, request: pb.CaptureRidePaymentRequest, context: ServicerContext
    ) -> pb.CaptureRidePaymentResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        ride_id = f.ride_id("ride_id", request.ride_id)
        fare = f.positive_amount("final_fare_idr", request.final_fare_idr)
        driver = f.mobile("driver_mobile_number", request.driver_mobile_number)
        if request.platform_fee_idr < 0:
            f.bad("platform_fee_idr", "platform_fee_idr must not be negative")
        elif request.platform_fee_idr > request.final_fare_idr > 0:
            f.bad("platform_fee_idr", "platform_fee_idr must not exceed final_fare_idr")
        f.done()
        ride = await self._rides.capture(
            keyed("CaptureRidePayment", request, request_id),
            ride_id,
            fare,
            driver,
            request.platform_fee_idr,
            timeout=time_left(context),
        )
        return pb.CaptureRidePaymentResponse(ride_payment=convert.ride_payment(ride))

    async def VoidRidePayment(
        self, request: pb.VoidRidePaymentRequest, context: ServicerContext
    ) -> pb.VoidRidePaymentResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        ride_id = f.ride_id("ride_id", request.ride_id)
        f.check("reason", text_problem(request.reason, max_length=200))
        f.done()
        ride = await self._rides.void(
            keyed("VoidRidePayment", request, request_id),
            ride_id,
            request.reason,
            timeout=time_left(context),
        )
        return pb.VoidRidePaymentResponse(ride_payment=convert.ride_payment(ride))

    async def GetRidePayment(
        self, request: pb.GetRidePaymentRequest, context: ServicerContext
    ) -> pb.GetRidePaymentResponse:
        f = Fields()
        ride_id = f.ride_id("ride_id", request.ride_id)
        f.done()
        return pb.GetRidePaymentResponse(
            ride_payment=convert.ride_payment(await self._rides.ride(ride_id))
        )

    async def TipDriver(
        self, request: pb.TipDriverRequest, context: ServicerContext
    ) -> pb.TipDriverResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        ride_id = f.ride_id("ride_id", request.ride_id)
        amount = f.positive_amount("amount_idr", request.amount_idr)
        f.done()
        transaction = await self._transfers.tip(
            keyed("TipDriver", request, request_id),
            ride_id,
            amount,
            timeout=time_left(context),
        )
        return pb.TipDriverResponse(transaction=convert.transaction(transaction))

    async def Transfer(
        self, request: pb.TransferRequest, context: ServicerContext
    ) -> pb.TransferResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        source = f.mobile("from_mobile_number", request.from_mobile_number)
        target = f.mobile("to_mobile_number", request.to_mobile_number)
        amount = f.positive_amount("amount_idr", request.amount_idr)
        f.check("note", text_problem(request.note, max_length=100))
        if request.from_mobile_number and request.to_mobile_number and source == target:
            f.bad("to_mobile_number", "to_mobile_number must differ from from_mobile_number")
        f.done()
        transaction = await self._transfers.transfer(
            keyed("Transfer", request, request_id),
            source,
            target,
            amount,
            request.note,
            timeout=time_left(context),
        )
        return pb.TransferResponse(transaction=convert.transaction(transaction))

    async def PayQris(
        self, request: pb.PayQrisRequest, context: ServicerContext
    ) -> pb.PayQrisResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        mobile = f.mobile("mobile_number", request.mobile_number)
        amount = 0
        merchant = ""
        if request.amount_idr < 0:
            f.bad("amount_idr", "amount_idr must not be negative")
        try:
            qris = parse_qris(request.qris_payload)
        except InvalidQris as exc:
            f.bad("qris_payload", str(exc))
        else:
            merchant = qris.merchant_name
            try:
                amount = amount_to_pay(qris, max(request.amount_idr, 0))
            except QrisAmountError as exc:
                if request.amount_idr >= 0:  # a negative amount is named above already
                    f.bad("amount_idr", f"amount_idr {exc}")
        f.done()
        transaction = await self._external.pay_qris(
            keyed("PayQris", request, request_id),
            mobile,
            request.qris_payload,
            merchant,
            amount,
            timeout=time_left(context),
        )
        return pb.PayQrisResponse(transaction=convert.transaction(transaction))

"""Representative payloads: what a GetAccount call carries, for the echo ceiling."""

from __future__ import annotations

from wallet.v1 import account_service_pb2, common_pb2

ACCOUNT_REQUEST_BYTES = account_service_pb2.GetAccountRequest(
    mobile_number="081234567890"
).SerializeToString()

ACCOUNT_RESPONSE_BYTES = account_service_pb2.GetAccountResponse(
    account=common_pb2.Account(
        mobile_number="+6281234567890",
        first_name="Siti",
        last_name="Rahayu",
        full_name="Siti Rahayu",
        email="siti@example.com",
        account_type=common_pb2.ACCOUNT_TYPE_BASIC,
        account_status=common_pb2.ACCOUNT_STATUS_ACTIVE,
        customer_type=common_pb2.CUSTOMER_TYPE_SUBSCRIBER,
        kyc_status=common_pb2.KYC_STATUS_UNVERIFIED,
        linked=True,
        balance=common_pb2.Balance(pocket_id="2", available_idr=1_000_000),
    )
).SerializeToString()

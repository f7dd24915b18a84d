"""Domain values → wallet.v1 messages."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from wallet.v1 import common_pb2 as pb

from wallet_service.domain.account import (
    AccountStatus,
    AccountType,
    CustomerType,
    KycIdentity,
    KycStatus,
    WalletAccount,
)
from wallet_service.domain.money import RideStatus, TxStatus, TxType
from wallet_service.domain.phone import MobileNumber
from wallet_service.domain.records import RidePayment, Transaction

ACCOUNT_TYPES = {
    AccountType.UNKNOWN: pb.ACCOUNT_TYPE_UNSPECIFIED,
    AccountType.BASIC: pb.ACCOUNT_TYPE_BASIC,
    AccountType.PREMIUM: pb.ACCOUNT_TYPE_PREMIUM,
}
ACCOUNT_STATUSES = {
    AccountStatus.UNKNOWN: pb.ACCOUNT_STATUS_UNSPECIFIED,
    AccountStatus.ACTIVE: pb.ACCOUNT_STATUS_ACTIVE,
    AccountStatus.INACTIVE: pb.ACCOUNT_STATUS_INACTIVE,
    AccountStatus.BLOCKED: pb.ACCOUNT_STATUS_BLOCKED,
}
CUSTOMER_TYPES = {
    CustomerType.UNKNOWN: pb.CUSTOMER_TYPE_UNSPECIFIED,
    CustomerType.SUBSCRIBER: pb.CUSTOMER_TYPE_SUBSCRIBER,
    CustomerType.MERCHANT: pb.CUSTOMER_TYPE_MERCHANT,
    CustomerType.CORPORATE: pb.CUSTOMER_TYPE_CORPORATE,
}
KYC_STATUSES = {
    KycStatus.UNKNOWN: pb.KYC_STATUS_UNSPECIFIED,
    KycStatus.UNVERIFIED: pb.KYC_STATUS_UNVERIFIED,
    KycStatus.PENDING: pb.KYC_STATUS_PENDING,
    KycStatus.VERIFIED: pb.KYC_STATUS_VERIFIED,
    KycStatus.REJECTED: pb.KYC_STATUS_REJECTED,
}


def e164(mobile: MobileNumber) -> str:
    return "+" + mobile.canonical


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def account(wallet: WalletAccount) -> pb.Account:
    message = pb.Account(mobile_number=e164(wallet.mobile_number), linked=wallet.linked)
    if wallet.linked_at is not None:
        message.link_time.CopyFrom(timestamp(wallet.linked_at))
    a = wallet.account
    if a is None:  # KasPro could not be read back: only what we know ourselves
        return message
    message.MergeFrom(
        pb.Account(
            first_name=a.first_name,
            middle_name=a.middle_name,
            last_name=a.last_name,
            full_name=a.full_name,
            email=a.email,
            account_type=ACCOUNT_TYPES[a.account_type],
            account_status=ACCOUNT_STATUSES[a.account_status],
            customer_type=CUSTOMER_TYPES[a.customer_type],
            kyc_status=KYC_STATUSES[a.kyc_status],
            balance=pb.Balance(
                pocket_id=a.balance.pocket_id, available_idr=a.balance.available_idr
            ),
        )
    )
    return message


def kyc_identity(identity: KycIdentity, nik_problem: str | None) -> pb.KycIdentity:
    return pb.KycIdentity(
        id_card_number=identity.id_card_number,
        id_card_number_valid=nik_problem is None,
        id_card_number_problem=nik_problem or "",
        name=identity.name,
        birth_place=identity.birth_place,
        birth_date=identity.birth_date,
        gender=identity.gender,
        blood_type=identity.blood_type,
        address=identity.address,
        rt_rw=identity.rt_rw,
        village_district=identity.village_district,
        sub_district=identity.sub_district,
        district=identity.district,
        province=identity.province,
        religion=identity.religion,
        marital_status=identity.marital_status,
        occupation=identity.occupation,
        nationality=identity.nationality,
        id_expiry_date=identity.id_expiry_date,
    )


TX_TYPES = {t: getattr(pb, f"TRANSACTION_TYPE_{t.value}") for t in TxType}
TX_STATUSES = {s: getattr(pb, f"TRANSACTION_STATUS_{s.value}") for s in TxStatus}
RIDE_STATUSES = {s: getattr(pb, f"RIDE_PAYMENT_STATUS_{s.value}") for s in RideStatus}
OUTLETS = {"ALFAMART": pb.RETAIL_OUTLET_ALFAMART, "INDOMARET": pb.RETAIL_OUTLET_INDOMARET}


def _e164_of(canonical: str) -> str:
    return "+" + canonical if canonical else ""


def transaction(t: Transaction) -> pb.Transaction:
    message = pb.Transaction(
        transaction_id=t.id,
        type=TX_TYPES[t.type],
        status=TX_STATUSES[t.status],
        amount_idr=t.amount_idr,
        fee_idr=t.fee_idr,
        mobile_number=_e164_of(t.mobile_number),
        counterparty_mobile_number=_e164_of(t.counterparty),
        ride_id=t.ride_id,
        note=t.note,
        withdrawal_code=t.withdrawal_code,
        merchant_name=str(t.details.get("merchant_name", "")),
        kaspro_reference=t.kaspro_reference or "",
        failure_message=t.failure_message,
        create_time=timestamp(t.create_time),
        update_time=timestamp(t.update_time),
    )
    if "bank_code" in t.details:
        message.bank_account.CopyFrom(
            pb.BankAccount(
                bank_code=t.details["bank_code"],
                account_number=t.details["account_number"],
                account_name=t.details["account_name"],
            )
        )
    elif "outlet" in t.details:
        message.retail_outlet = OUTLETS[t.details["outlet"]]
    return message


def ride_payment(r: RidePayment) -> pb.RidePayment:
    return pb.RidePayment(
        ride_id=r.ride_id,
        status=RIDE_STATUSES[r.status],
        passenger_mobile_number=_e164_of(r.passenger),
        driver_mobile_number=_e164_of(r.driver),
        held_amount_idr=r.held_amount_idr,
        final_fare_idr=r.final_fare_idr,
        platform_fee_idr=r.platform_fee_idr,
        driver_payout_idr=r.driver_payout_idr,
        refund_idr=r.refund_idr,
        expire_time=timestamp(r.expire_time),
        reason=r.reason,
        create_time=timestamp(r.create_time),
        update_time=timestamp(r.update_time),
    )


def account_event(data: dict[str, Any]) -> pb.Account:
    """What an account event knows: the number, the link and (after eKYC) the KYC status.

    The rest of the account is KasPro's and is read with GetAccount.
    """
    message = pb.Account(mobile_number=_e164_of(data["mobile_number"]))
    if data.get("linked_at") is not None:
        message.linked = True
        message.link_time.CopyFrom(timestamp(data["linked_at"]))
    if data.get("kyc_status") == "VERIFIED":
        message.kyc_status = pb.KYC_STATUS_VERIFIED
    return message

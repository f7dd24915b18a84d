"""Domain values → wallet.v1 messages."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

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
from wallet_service.domain.records import RidePayment, Transaction
from wallet_service.store.audit import AdminAction

E = TypeVar("E", bound=enum.Enum)


def _same_names(members: type[E], prefix: str) -> dict[E, Any]:
    """Each member to the wallet.v1 value of the same name (UNKNOWN: ``_UNSPECIFIED``)."""
    return {
        m: getattr(pb, f"{prefix}_{'UNSPECIFIED' if m.name == 'UNKNOWN' else m.name}")
        for m in members
    }


ACCOUNT_TYPES = _same_names(AccountType, "ACCOUNT_TYPE")
ACCOUNT_STATUSES = _same_names(AccountStatus, "ACCOUNT_STATUS")
CUSTOMER_TYPES = _same_names(CustomerType, "CUSTOMER_TYPE")
KYC_STATUSES = _same_names(KycStatus, "KYC_STATUS")
TX_TYPES = _same_names(TxType, "TRANSACTION_TYPE")
TX_STATUSES = _same_names(TxStatus, "TRANSACTION_STATUS")
RIDE_STATUSES = _same_names(RideStatus, "RIDE_PAYMENT_STATUS")
OUTLETS = {"ALFAMART": pb.RETAIL_OUTLET_ALFAMART, "INDOMARET": pb.RETAIL_OUTLET_INDOMARET}


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def account(wallet: WalletAccount) -> pb.Account:
    message = pb.Account(mobile_number=_e164(wallet.mobile_number.canonical), linked=wallet.linked)
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


def _e164(canonical: str) -> str:
    return "+" + canonical if canonical else ""


def transaction(t: Transaction) -> pb.Transaction:
    message = pb.Transaction(
        transaction_id=t.id,
        type=TX_TYPES[t.type],
        status=TX_STATUSES[t.status],
        amount_idr=t.amount_idr,
        fee_idr=t.fee_idr,
        mobile_number=_e164(t.mobile_number),
        counterparty_mobile_number=_e164(t.counterparty),
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
        passenger_mobile_number=_e164(r.passenger),
        driver_mobile_number=_e164(r.driver),
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
    message = pb.Account(mobile_number=_e164(data["mobile_number"]))
    if data.get("linked_at") is not None:
        message.linked = True
        message.link_time.CopyFrom(timestamp(data["linked_at"]))
    if data.get("kyc_status") == "VERIFIED":
        message.kyc_status = pb.KYC_STATUS_VERIFIED
    return message


def admin_action(action: AdminAction) -> pb.AdminAction:
    """An audit row of an operator's action (AdminService answers, ADMIN_ACTION events)."""
    return pb.AdminAction(
        action_id=action.id,
        caller=action.caller,
        action=getattr(pb, f"ADMIN_ACTION_TYPE_{action.action.name}"),
        target=action.target,
        reason=action.reason,
        request_id=action.request_id,
        outcome=getattr(pb, f"ADMIN_ACTION_OUTCOME_{action.outcome.name}"),
        detail=action.detail,
        error_reason=action.error_reason,
        occur_time=timestamp(action.occurred_at),
    )

"""UpgradeKyc: linking first, the OCR identity, malformed NIKs reported, image rules, no storage."""

from __future__ import annotations

import base64
import os

import grpc
import pytest
from wallet.v1 import account_service_pb2, common_pb2

from kaspro_sandbox import ocr_identity

from .conftest import (
    APP,
    DEADLINE,
    E164,
    EKYC_PATH,
    GIF_HEADER,
    ID_CARD_JPEG,
    LOCAL,
    MAX_IMAGE_BYTES,
    PNG_HEADER,
    SELFIE_JPEG,
    SELFIE_WITH_ID_CARD_JPEG,
    Harness,
    assert_failure,
    expect_failure,
)

IMAGE_FIELDS = ("id_card_image", "selfie_image", "selfie_with_id_card_image")
JPEG_HEADER = b"\xff\xd8\xff\xe0"

# What the sandbox reads off the sample KTP (kaspro_sandbox/ocr.py), in our field names.
KASPRO_TO_PROTO = {
    "idCardNumber": "id_card_number",
    "name": "name",
    "religion": "religion",
    "rtrw": "rt_rw",
    "address": "address",
    "province": "province",
    "district": "district",
    "subDistrict": "sub_district",
    "occupation": "occupation",
    "birthPlace": "birth_place",
    "gender": "gender",
    "birthDate": "birth_date",
    "idExpiredDate": "id_expiry_date",
    "bloodType": "blood_type",
    "villageDistrict": "village_district",
    "nationality": "nationality",
    "maritalStatus": "marital_status",
}


def upgrade_request(
    request_id: str = "kyc-1",
    mobile: str = LOCAL,
    *,
    id_card_image: bytes = ID_CARD_JPEG,
    selfie_image: bytes = SELFIE_JPEG,
    selfie_with_id_card_image: bytes = SELFIE_WITH_ID_CARD_JPEG,
) -> account_service_pb2.UpgradeKycRequest:
    return account_service_pb2.UpgradeKycRequest(
        request_id=request_id,
        mobile_number=mobile,
        id_card_image=id_card_image,
        selfie_image=selfie_image,
        selfie_with_id_card_image=selfie_with_id_card_image,
    )


async def upgrade(
    h: Harness, request: account_service_pb2.UpgradeKycRequest
) -> account_service_pb2.UpgradeKycResponse:
    return await h.accounts.UpgradeKyc(request, metadata=APP, timeout=DEADLINE)


async def linked_customer(h: Harness) -> None:
    await h.register()
    await h.link()


async def test_unlinked_wallet_cannot_upgrade(h: Harness) -> None:
    await h.register()

    failure = await expect_failure(upgrade(h, upgrade_request()))

    assert_failure(failure, grpc.StatusCode.FAILED_PRECONDITION, "WALLET_NOT_LINKED")
    assert await h.kaspro_requests(EKYC_PATH) == []
    assert (await h.get_account()).account_type == common_pb2.ACCOUNT_TYPE_BASIC


async def test_upgrade_returns_the_ocr_identity_and_makes_the_account_premium(
    h: Harness,
) -> None:
    await linked_customer(h)

    response = await upgrade(h, upgrade_request())

    assert response.kyc_status == common_pb2.KYC_STATUS_VERIFIED
    expected = ocr_identity(ID_CARD_JPEG, "Budi Santoso")
    identity = response.identity
    for kaspro_name, proto_name in KASPRO_TO_PROTO.items():
        assert getattr(identity, proto_name) == expected[kaspro_name], proto_name
    assert identity.name == "BUDI SANTOSO"
    assert identity.id_card_number_valid is True
    assert identity.id_card_number_problem == ""
    assert response.account.account_type == common_pb2.ACCOUNT_TYPE_PREMIUM
    assert response.account.kyc_status == common_pb2.KYC_STATUS_VERIFIED
    assert response.account.linked is True

    account = await h.get_account(E164)
    assert account.account_type == common_pb2.ACCOUNT_TYPE_PREMIUM
    assert account.kyc_status == common_pb2.KYC_STATUS_VERIFIED
    customer = await h.kaspro_customer(LOCAL)
    assert customer is not None
    assert customer["idCardNumber"] == expected["idCardNumber"]
    assert len(await h.kaspro_requests(EKYC_PATH)) == 1


async def test_png_images_are_accepted(h: Harness) -> None:
    await linked_customer(h)
    png = PNG_HEADER + b"\x00\x00\x00\rIHDR" + os.urandom(256)

    response = await upgrade(h, upgrade_request(id_card_image=png, selfie_image=png))

    assert response.kyc_status == common_pb2.KYC_STATUS_VERIFIED
    assert response.identity.id_card_number == ocr_identity(png, "")["idCardNumber"]


@pytest.mark.parametrize(
    ("nik", "problem_word"),
    [
        pytest.param("19xxxxxxxxxx001", "16 digits", id="masked"),
        pytest.param("3171011513900001", "month", id="month-13"),
        pytest.param("3171013201900001", "day", id="day-32"),
        pytest.param("3171011501900000", "serial", id="serial-0000"),
        pytest.param("317101150190001", "16 digits", id="15-digits"),
    ],
)
async def test_malformed_nik_from_kaspro_is_reported_not_hidden(
    h: Harness, nik: str, problem_word: str
) -> None:
    await linked_customer(h)
    await h.override_ocr(LOCAL, nik)

    response = await upgrade(h, upgrade_request())

    assert response.identity.id_card_number == nik
    assert response.identity.id_card_number_valid is False
    assert problem_word in response.identity.id_card_number_problem
    assert response.identity.name == "BUDI SANTOSO"
    assert response.kyc_status == common_pb2.KYC_STATUS_VERIFIED


@pytest.mark.parametrize("field", IMAGE_FIELDS)
@pytest.mark.parametrize(
    "image",
    [
        pytest.param(b"", id="empty"),
        pytest.param(JPEG_HEADER + b"\x00" * (MAX_IMAGE_BYTES + 1 - len(JPEG_HEADER)), id="5MiB+1"),
        pytest.param(GIF_HEADER + b"\x00" * 64, id="gif"),
        pytest.param(b"\xff\xd8", id="truncated-jpeg-magic"),
        pytest.param(b"not an image at all", id="text"),
    ],
)
async def test_bad_image_is_named_and_refused_before_kaspro(
    h: Harness, field: str, image: bytes
) -> None:
    await linked_customer(h)
    before = await h.kaspro_requests()
    request = upgrade_request()
    setattr(request, field, image)

    failure = await expect_failure(upgrade(h, request))

    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", field)
    assert await h.kaspro_requests() == before


async def test_every_bad_image_is_named_in_one_answer(h: Harness) -> None:
    await linked_customer(h)

    failure = await expect_failure(
        upgrade(
            h,
            upgrade_request(
                request_id="",
                mobile="12345",
                id_card_image=b"",
                selfie_image=GIF_HEADER,
                selfie_with_id_card_image=JPEG_HEADER + b"\x00" * MAX_IMAGE_BYTES,
            ),
        )
    )

    assert_failure(
        failure,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        "request_id",
        "mobile_number",
        *IMAGE_FIELDS,
    )
    assert await h.kaspro_requests(EKYC_PATH) == []


async def test_three_images_of_5_mib_are_accepted(h: Harness) -> None:
    await linked_customer(h)
    images = [JPEG_HEADER + os.urandom(MAX_IMAGE_BYTES - len(JPEG_HEADER)) for _ in range(3)]
    assert all(len(image) == MAX_IMAGE_BYTES for image in images)

    response = await upgrade(
        h,
        upgrade_request(
            id_card_image=images[0], selfie_image=images[1], selfie_with_id_card_image=images[2]
        ),
    )

    assert response.kyc_status == common_pb2.KYC_STATUS_VERIFIED
    expected = ocr_identity(images[0], "Budi Santoso")["idCardNumber"]
    assert response.identity.id_card_number == expected


def sized(request: account_service_pb2.UpgradeKycRequest, total: int) -> None:
    """Pad (or trim) the KTP image until the serialized request is ``total`` bytes."""
    while (missing := total - request.ByteSize()) != 0:
        image = request.id_card_image
        request.id_card_image = image + b"\x00" * missing if missing > 0 else image[:missing]


async def test_the_receive_limit_is_the_largest_valid_request(h: Harness) -> None:
    # A 1 KiB image cap keeps the messages small: the limit is 3 KiB + 64 KiB.
    await h.restart(h.with_config(max_image_bytes=1024))
    await linked_customer(h)
    limit = h.config.max_message_bytes
    ktp, selfie, selfie_with_ktp = (
        JPEG_HEADER + os.urandom(1024 - len(JPEG_HEADER)) for _ in range(3)
    )
    largest, at_limit, over_limit = (
        upgrade_request(
            request_id,
            E164,
            id_card_image=ktp,
            selfie_image=selfie,
            selfie_with_id_card_image=selfie_with_ktp,
        )
        for request_id in ("k" * 64, "at", "over")
    )
    sized(at_limit, limit)
    sized(over_limit, limit + 1)

    response = await upgrade(h, largest)
    assert response.kyc_status == common_pb2.KYC_STATUS_VERIFIED
    # At the limit the message arrives, and its oversized image is named.
    failure = await expect_failure(upgrade(h, at_limit))
    assert_failure(failure, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "id_card_image")
    # One byte more: gRPC refuses it from its length prefix, without our details.
    failure = await expect_failure(upgrade(h, over_limit))
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure.reason is None
    assert len(await h.kaspro_requests(EKYC_PATH)) == 1


def database_bytes(h: Harness) -> bytes:
    found = b""
    for suffix in ("", "-wal", "-journal"):
        path = h.db_path.with_name(h.db_path.name + suffix)
        if path.exists():
            found += path.read_bytes()
    return found


@pytest.mark.sqlite_only
async def test_images_are_not_stored(h: Harness) -> None:
    await linked_customer(h)
    marker = os.urandom(64)
    images = [JPEG_HEADER + marker + bytes([i]) * 4096 + marker for i in range(3)]

    await upgrade(
        h,
        upgrade_request(
            id_card_image=images[0], selfie_image=images[1], selfie_with_id_card_image=images[2]
        ),
    )
    # Scan the database file and its WAL while the service runs, and again after it
    # stopped (and checkpointed the WAL into the file).
    stored = database_bytes(h)
    await h.stop_service()
    stored += database_bytes(h)

    assert stored, "the database file should exist"
    assert b"idempotency_keys" in stored  # proves we are scanning the real database
    for needle in (marker, base64.b64encode(marker), marker.hex().encode()):
        assert needle not in stored
    for image in images:
        assert base64.b64encode(image)[8:72] not in stored


async def test_a_retry_makes_no_second_kaspro_call(h: Harness) -> None:
    await linked_customer(h)
    first = await upgrade(h, upgrade_request())
    calls = await h.kaspro_requests()

    second = await upgrade(h, upgrade_request())

    # The same answer, but the OCR identity: only the masked NIK and its check are kept.
    assert (second.kyc_status, second.account) == (first.kyc_status, first.account)
    assert second.identity == common_pb2.KycIdentity(
        id_card_number=first.identity.id_card_number[:4]
        + "*" * 10
        + first.identity.id_card_number[-2:],
        id_card_number_valid=True,
    )
    assert await h.kaspro_requests() == calls


async def test_same_request_id_with_other_images_is_refused(h: Harness) -> None:
    await linked_customer(h)
    await upgrade(h, upgrade_request())
    calls = await h.kaspro_requests()

    failure = await expect_failure(
        upgrade(h, upgrade_request(id_card_image=JPEG_HEADER + b"another photo"))
    )

    assert_failure(failure, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await h.kaspro_requests() == calls


async def test_provider_failure_during_upgrade_is_unavailable_and_retryable(h: Harness) -> None:
    await linked_customer(h)
    await h.arm_fault(EKYC_PATH, "http_500")

    failure = await expect_failure(upgrade(h, upgrade_request()))
    assert_failure(failure, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert (await h.get_account()).account_type == common_pb2.ACCOUNT_TYPE_BASIC

    response = await upgrade(h, upgrade_request())
    assert response.kyc_status == common_pb2.KYC_STATUS_VERIFIED

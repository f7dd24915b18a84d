"""Onboarding through the sandbox: register, OTP, eKYC upgrade, account inquiry."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kaspro_sandbox import ocr_identity

from .partner_client import JPEG, PNG, Partner, b64

pytestmark = pytest.mark.asyncio(loop_scope="module")

NUMBER = "081234567890"
OTHER_NUMBER = "085712345678"
GET_OTP = "/pil-partner-get-otp/"
VALIDATE_OTP = "/validate-otp/"
EKYC = "/pil-partner/ekyc-upgrade-premium-inquiry/"
INQUIRY = "/customer-account-inquiry/"
RESPONSE_ID = re.compile(r"OLSFQ[0-9]{17}")
NOT_FOUND = {"code": 110005, "message": "Customer not found"}
SEED_EKYC_KEYS = {
    "requestId",
    "idCardNumber",
    "name",
    "religion",
    "rtrw",
    "address",
    "province",
    "district",
    "subDistrict",
    "occupation",
    "birthPlace",
    "gender",
    "birthDate",
    "idExpiredDate",
    "bloodType",
    "villageDistrict",
    "nationality",
    "maritalStatus",
}


async def otp_for(partner: Partner, mobile_number: str) -> str:
    response = await partner.http.get("/_sandbox/otp", params={"mobileNumber": mobile_number})
    assert response.status_code == 200, response.text
    return str(response.json()["otp"])


async def inquiry_data(partner: Partner, mobile_number: str) -> dict[str, Any]:
    body = (await partner.get(INQUIRY, mobile_number)).json()
    assert body["code"] == 0, body
    data: dict[str, Any] = body["data"]
    return data


# register-customer


async def test_register_answers_success_with_a_generated_response_id(partner: Partner) -> None:
    response = await partner.register(NUMBER)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["responseId", "message", "code"]
    assert body["message"] == "Berhasil"
    assert body["code"] == 0
    assert RESPONSE_ID.fullmatch(body["responseId"])


async def test_new_customer_starts_basic_active_unverified_and_empty(partner: Partner) -> None:
    await partner.register(NUMBER)
    data = await inquiry_data(partner, NUMBER)
    assert data["accountType"] == "Basic"
    assert data["accountStatus"] == "Active"
    assert data["customerType"] == "Subscriber"
    assert data["kycStatus"] == "Unverified"
    assert data["balance"] == {"pocketId": "2", "availableBalance": "0"}


async def test_registering_a_number_twice_fails_with_the_seed_shape(partner: Partner) -> None:
    await partner.register(NUMBER, request_id="REQ0000000000001")
    response = await partner.register(NUMBER, request_id="REQ0000000000002")
    assert response.status_code == 200
    assert '"responseId ":' in response.text
    body = response.json()
    assert list(body) == ["responseId ", "code", "message"]
    assert body["code"] == 110006
    assert body["message"] == "Mobile number already registered"
    assert RESPONSE_ID.fullmatch(body["responseId "])


async def test_retrying_the_same_request_id_succeeds_again(partner: Partner) -> None:
    first = (await partner.register(NUMBER, request_id="REQ0000000000001")).json()
    retry = (await partner.register(NUMBER, request_id="REQ0000000000001")).json()
    assert retry == first
    customers = (await partner.http.get("/_sandbox/customers")).json()
    assert len(customers) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"requestId": "req0000000000001"}, "requestId"),
        ({"requestId": "REQ000000000001"}, "requestId"),
        ({"requestId": "REQ-000000000001"}, "requestId"),
        ({"requestId": None}, "requestId"),
        ({"mobileNumber": "6281234567890"}, "mobileNumber"),
        ({"mobileNumber": "080012345678"}, "mobileNumber"),
        ({"mobileNumber": "0812345"}, "mobileNumber"),
        ({"mobileNumber": "08123456789012"}, "mobileNumber"),
        ({"firstName": ""}, "firstName"),
        ({"firstName": "   "}, "firstName"),
        ({"email": 42}, "email"),
    ],
)
async def test_register_rejects_invalid_fields(
    partner: Partner, overrides: dict[str, Any], field: str
) -> None:
    body = {
        "requestId": "REQ0000000000001",
        "firstName": "Budi",
        "mobileNumber": NUMBER,
        **overrides,
    }
    response = await partner.post("/register-customer/", body)
    assert response.status_code == 400
    sent_id = body["requestId"] if isinstance(body["requestId"], str) else ""
    assert response.json() == {
        "responseId": sent_id,
        "code": 400001,
        "message": f"Invalid request: {field}",
    }
    assert (await partner.http.get("/_sandbox/customers")).json() == []


async def test_register_rejects_a_body_that_is_not_a_json_object(partner: Partner) -> None:
    response = await partner.post("/register-customer/", ["not", "an", "object"])
    assert response.status_code == 400
    assert response.json() == {"responseId": "", "code": 400001, "message": "Invalid request: body"}


# OTP


async def test_otp_for_an_unknown_customer(partner: Partner) -> None:
    response = await partner.get(GET_OTP, NUMBER)
    assert response.status_code == 200
    assert response.json() == NOT_FOUND


async def test_otp_is_sent_and_can_be_validated_once(
    partner: Partner, capsys: pytest.CaptureFixture[str]
) -> None:
    await partner.register(NUMBER)
    response = await partner.get(GET_OTP, NUMBER)
    assert response.json() == {"message": "Berhasil", "code": 0, "data": {"expiry": 300}}
    otp = await otp_for(partner, NUMBER)
    printed = capsys.readouterr().out
    assert f"[KasPro sandbox] WhatsApp to 0812****7890: Kode OTP KasPro Anda {otp}." in printed
    assert NUMBER not in printed

    validated = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": otp})
    assert validated.json() == {"message": "Berhasil", "code": 0}
    reused = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": otp})
    assert reused.json() == {"code": 120002, "message": "OTP expired or not requested"}


async def test_wrong_otp_is_invalid_and_the_right_one_still_works(partner: Partner) -> None:
    await partner.register(NUMBER)
    await partner.get(GET_OTP, NUMBER)
    otp = await otp_for(partner, NUMBER)
    wrong = "000000" if otp != "000000" else "111111"
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": wrong})
    assert response.json() == {"code": 120001, "message": "Invalid OTP"}
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": otp})
    assert response.json()["code"] == 0


async def test_otp_expires_after_its_lifetime(partner: Partner) -> None:
    await partner.register(NUMBER)
    await partner.get(GET_OTP, NUMBER)
    otp = await otp_for(partner, NUMBER)
    partner.clock.advance(300)
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": otp})
    assert response.json() == {"code": 120002, "message": "OTP expired or not requested"}


async def test_a_new_otp_replaces_the_old_one(partner: Partner) -> None:
    await partner.register(NUMBER)
    await partner.get(GET_OTP, NUMBER)
    old = await otp_for(partner, NUMBER)
    await partner.get(GET_OTP, NUMBER)
    new = await otp_for(partner, NUMBER)
    assert new != old  # the module's sandbox is seeded, so this holds every run
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": old})
    assert response.json()["code"] == 120001
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": new})
    assert response.json()["code"] == 0


async def test_validate_without_an_otp_or_customer(partner: Partner) -> None:
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": "123456"})
    assert response.json() == NOT_FOUND
    await partner.register(NUMBER)
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": "123456"})
    assert response.json()["code"] == 120002


async def test_validate_requires_the_otp_field(partner: Partner) -> None:
    await partner.register(NUMBER)
    response = await partner.post(VALIDATE_OTP, {"mobileNumber": NUMBER, "otp": 123456})
    assert response.status_code == 400
    assert response.json() == {"code": 400001, "message": "Invalid request: otp"}


# eKYC upgrade


async def test_ekyc_answers_the_seed_shape_and_upgrades_the_customer(partner: Partner) -> None:
    await partner.register(NUMBER, firstName="Siti", middleName="Nur", lastName="Aisyah")
    response = await partner.ekyc(NUMBER, request_id="EKYC000000000042")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["code", "message", "data"]
    assert body["code"] == 0
    assert body["message"] == "Berhasil"
    data = body["data"]
    assert set(data) == SEED_EKYC_KEYS
    assert all(isinstance(value, str) for value in data.values())
    assert data == {"requestId": "EKYC000000000042", **ocr_identity(JPEG, "Siti Nur Aisyah")}
    assert data["name"] == "SITI NUR AISYAH"
    assert re.fullmatch(r"[0-9]{2}-[0-9]{2}-[0-9]{4}", data["birthDate"])

    account = await inquiry_data(partner, NUMBER)
    assert account["accountType"] == "Premium"
    assert account["kycStatus"] == "Verified"


async def test_ekyc_is_deterministic_in_the_id_card_image(partner: Partner) -> None:
    await partner.register(NUMBER)
    await partner.register(OTHER_NUMBER, request_id="REQ0000000000002")
    first = (await partner.ekyc(NUMBER)).json()["data"]["idCardNumber"]
    second = (await partner.ekyc(OTHER_NUMBER)).json()["data"]["idCardNumber"]
    assert first == second
    other_card = PNG + b"another card"
    third = (await partner.ekyc(NUMBER, id_card=other_card)).json()["data"]["idCardNumber"]
    assert third == ocr_identity(other_card, "")["idCardNumber"]
    assert third != first


async def test_ekyc_accepts_png_images(partner: Partner) -> None:
    await partner.register(NUMBER)
    response = await partner.ekyc(NUMBER, id_card=PNG, selfie=PNG, selfie_with_id_card=PNG)
    assert response.json()["code"] == 0


@pytest.mark.parametrize(
    ("id_card", "selfie", "selfie_with_id_card"),
    [
        (b"GIF89a not a jpeg", PNG, JPEG),
        (JPEG, b"plain text", JPEG),
        (JPEG, PNG, b""),
        (b"\xff\xd8", PNG, JPEG),
    ],
)
async def test_ekyc_rejects_anything_but_jpeg_or_png(
    partner: Partner, id_card: bytes, selfie: bytes, selfie_with_id_card: bytes
) -> None:
    await partner.register(NUMBER)
    response = await partner.ekyc(NUMBER, id_card, selfie, selfie_with_id_card)
    assert response.json() == {"code": 130001, "message": "Invalid image"}
    assert (await inquiry_data(partner, NUMBER))["accountType"] == "Basic"


async def test_ekyc_rejects_an_image_that_is_not_base64(partner: Partner) -> None:
    await partner.register(NUMBER)
    body = {
        "requestId": "EKYC000000000001",
        "mobileNumber": NUMBER,
        "idCardImage": "this is not base64!",
        "selfieImage": b64(JPEG),
        "selfieWithIdCardImage": b64(JPEG),
    }
    response = await partner.post(EKYC, body)
    assert response.json() == {"code": 130001, "message": "Invalid image"}


async def test_ekyc_for_an_unknown_customer(partner: Partner) -> None:
    response = await partner.ekyc(NUMBER)
    assert response.json() == NOT_FOUND


async def test_ekyc_requires_every_image_field(partner: Partner) -> None:
    await partner.register(NUMBER)
    body = {"requestId": "EKYC000000000001", "mobileNumber": NUMBER, "idCardImage": b64(JPEG)}
    response = await partner.post(EKYC, body)
    assert response.status_code == 400
    assert response.json() == {"code": 400001, "message": "Invalid request: selfieImage"}


# customer-account-inquiry


async def test_account_inquiry_answers_the_seed_shape_and_types(partner: Partner) -> None:
    await partner.register(NUMBER, firstName="Budi", middleName="", lastName="Santoso")
    await partner.http.post(f"/_sandbox/customers/{NUMBER}/balance", json={"balance": 150000})
    body = (await partner.get(INQUIRY, NUMBER)).json()
    assert body == {
        "code": 0,
        "message": "Berhasil",
        "data": {
            "firstName": "Budi",
            "middleName": "",
            "lastName": "Santoso",
            "fullName": "Budi Santoso",
            "accountType": "Basic",
            "accountStatus": "Active",
            "customerType": "Subscriber",
            "email": "budi@example.com",
            "mobileNumber": 6281234567890,
            "kycStatus": "Unverified",
            "balance": {"pocketId": "2", "availableBalance": "150000"},
        },
    }
    assert type(body["data"]["mobileNumber"]) is int


async def test_account_inquiry_for_an_unknown_customer(partner: Partner) -> None:
    response = await partner.get(INQUIRY, NUMBER)
    assert response.status_code == 200
    assert response.json() == NOT_FOUND


async def test_account_inquiry_requires_a_mobile_number(partner: Partner) -> None:
    response = await partner.request("GET", INQUIRY)
    assert response.status_code == 400
    assert response.json() == {"code": 400001, "message": "Invalid request: mobileNumber"}

"""KasPro request builders and response parsers, on the partner document's own bodies."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from wallet_service.domain.account import (
    Account,
    AccountStatus,
    AccountType,
    Balance,
    CustomerType,
    KycIdentity,
    KycStatus,
)
from wallet_service.domain.phone import MobileNumber
from wallet_service.kaspro.codes import Outcome, Rejection, classify
from wallet_service.kaspro.endpoints import (
    HttpRequest,
    Registration,
    account_inquiry_request,
    ekyc_upgrade_request,
    get_otp_request,
    kaspro_request_id,
    parse_account_inquiry,
    parse_amount,
    parse_ekyc_upgrade,
    parse_get_otp,
    parse_register_customer,
    parse_token,
    parse_validate_otp,
    peek_code,
    register_customer_request,
    token_refusal,
    token_request,
    validate_otp_request,
)
from wallet_service.kaspro.errors import KasProAuthError, KasProRejected, KasProUnavailable

MOBILE = MobileNumber("81234567890")

# Verbatim from the partner document (kaspro-partner-api.txt).
SEED_EKYC_SUCCESS = """{ "code": 0, "message": "Berhasil", "data": { "requestId": "16xxxxxxxx242", "idCardNumber": "19xxxxxxxxxx001", "name": "Dxxxx Pxxxx Pxxxxxx", "religion": "Ixxxx", "rtrw": "xxx/yyy", "address": "JL. xxxxxx", "province": "Kxxxxxxx Bxxxxx Bxxxxxxx", "district": "Txxxxxx Pxxxxx", "subDistrict": "Kxxxxxx Bxxxxxxx", "occupation": "Pxxxxxxxxxxxxx", "birthPlace": "Txxxxxxxxxxx", "gender": "Pxxxxxxxxx", "birthDate": "dd-mm-yyyy", "idExpiredDate": "SEUMUR HIDUP", "bloodType": "-", "villageDistrict": "Pxxxxx Lxxxxxx", "nationality": "WNI", "maritalStatus": "xxxxxxxxx" } }"""  # noqa: E501
SEED_EKYC_FAIL = """{ "code": 110005, "message": "Customer not found" }"""
SEED_BANK_TRANSFER_IN_PROCESS = """{ "code": 1, "message": "In Process", "responseId": "OLSFQ20220214101951114", "data": { "account": "888xxxxxxxxx918", "amount": "4xxx9", "price": "4xxx9", "serviceFee": "6xxx", "reffId": "OLSFQ20220214101951114", "flowType": "Async" } }"""  # noqa: E501

ACCOUNT_SUCCESS: dict[str, Any] = {
    "code": 0,
    "message": "Berhasil",
    "data": {
        "firstName": "Budi",
        "middleName": "",
        "lastName": "Santoso",
        "fullName": "Budi Santoso",
        "accountType": "Premium",
        "accountStatus": "Active",
        "customerType": "Subscriber",
        "email": "budi@example.com",
        "mobileNumber": 6281234567890,
        "kycStatus": "Verified",
        "balance": {"pocketId": "2", "availableBalance": "150000"},
    },
}

GARBAGE: list[Any] = [
    None,
    [],
    [{"code": 0}],
    "<html><body>502 Bad Gateway</body></html>",
    42,
    {},
    {"message": "Berhasil"},
    {"code": None, "message": "Berhasil"},
    {"code": "zero", "message": "Berhasil"},
    {"code": True, "message": "Berhasil"},
    {"code": [0], "message": "Berhasil"},
]


def account_body(**data: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(ACCOUNT_SUCCESS))
    body["data"].update(data)
    return body


def amount_body(amount: Any) -> dict[str, Any]:
    return account_body(balance={"pocketId": "2", "availableBalance": amount})


# Codes.


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, (Outcome.SUCCEEDED, None)),
        (1, (Outcome.IN_PROCESS, None)),
        (110005, (Outcome.REJECTED, Rejection.CUSTOMER_NOT_FOUND)),
        (110006, (Outcome.REJECTED, Rejection.CUSTOMER_ALREADY_REGISTERED)),
        (120001, (Outcome.REJECTED, Rejection.OTP_INVALID)),
        (120002, (Outcome.REJECTED, Rejection.OTP_EXPIRED)),
        (130001, (Outcome.REJECTED, Rejection.IMAGE_REJECTED)),
        (140001, (Outcome.REJECTED, Rejection.INSUFFICIENT_FUNDS)),
        (140002, (Outcome.REJECTED, Rejection.LIMIT_EXCEEDED)),
        (150001, (Outcome.REJECTED, Rejection.TRANSACTION_NOT_FOUND)),
        (400001, (Outcome.REJECTED, Rejection.INVALID_REQUEST)),
        (401001, (Outcome.UNKNOWN, None)),
        (401002, (Outcome.UNKNOWN, None)),
        (401003, (Outcome.UNKNOWN, None)),
    ],
)
def test_classify_known_codes(code: int, expected: tuple[Outcome, Rejection | None]) -> None:
    assert classify(code) == expected


@pytest.mark.parametrize("code", [-1, 2, 200, 110004, 999999, 401004, 2001100, 500])
def test_classify_unknown_codes_is_unknown_never_success(code: int) -> None:
    assert classify(code) == (Outcome.UNKNOWN, None)


# Request builders.


def test_register_customer_request_is_the_documented_body() -> None:
    registration = Registration(
        request_id="ABCDEFGHIJKLMNOP",
        mobile_number=MOBILE,
        first_name="Budi",
        middle_name="",
        last_name="Santoso",
        email="budi@example.com",
        address="Jl. Merdeka 1",
        city="Jakarta",
        province="DKI Jakarta",
        postal_code="10110",
    )
    request = register_customer_request(registration)
    assert request == HttpRequest(
        method="POST",
        path="/register-customer/",
        json={
            "requestId": "ABCDEFGHIJKLMNOP",
            "firstName": "Budi",
            "middleName": "",
            "lastName": "Santoso",
            "email": "budi@example.com",
            "mobileNumber": "081234567890",
            "address": "Jl. Merdeka 1",
            "city": "Jakarta",
            "province": "DKI Jakarta",
            "country": "ID",
            "postalCode": "10110",
        },
    )
    assert request.json is not None
    assert list(request.json) == [
        "requestId",
        "firstName",
        "middleName",
        "lastName",
        "email",
        "mobileNumber",
        "address",
        "city",
        "province",
        "country",
        "postalCode",
    ]


def test_get_requests_send_the_local_number_in_the_query() -> None:
    assert get_otp_request(MOBILE) == HttpRequest(
        method="GET", path="/pil-partner-get-otp/", query={"mobileNumber": "081234567890"}
    )
    assert account_inquiry_request(MOBILE) == HttpRequest(
        method="GET", path="/customer-account-inquiry/", query={"mobileNumber": "081234567890"}
    )


def test_validate_otp_request() -> None:
    assert validate_otp_request(MOBILE, "123456") == HttpRequest(
        method="POST",
        path="/validate-otp/",
        json={"mobileNumber": "081234567890", "otp": "123456"},
    )


def test_ekyc_request_sends_images_base64() -> None:
    id_card, selfie, both = b"\xff\xd8\xffKTP", b"\x89PNG selfie", b"\xff\xd8\xffboth"
    request = ekyc_upgrade_request("ABCDEFGHIJKLMNOP", MOBILE, id_card, selfie, both)
    assert request == HttpRequest(
        method="POST",
        path="/pil-partner/ekyc-upgrade-premium-inquiry/",
        json={
            "requestId": "ABCDEFGHIJKLMNOP",
            "mobileNumber": "081234567890",
            "idCardImage": base64.b64encode(id_card).decode(),
            "selfieImage": base64.b64encode(selfie).decode(),
            "selfieWithIdCardImage": base64.b64encode(both).decode(),
        },
    )
    assert request.json is not None
    assert base64.b64decode(request.json["idCardImage"]) == id_card


def test_token_request_is_a_client_credentials_form() -> None:
    assert token_request("client", "secret") == HttpRequest(
        method="POST",
        path="/authentication-server/oauth/token",
        form={"grant_type": "client_credentials", "client_id": "client", "client_secret": "secret"},
    )


def test_kaspro_request_id_is_deterministic_16_upper_alphanumerics() -> None:
    first = kaspro_request_id("driver-app", "RegisterCustomer", "req-1")
    assert re.fullmatch(r"[A-Z0-9]{16}", first)
    assert first == kaspro_request_id("driver-app", "RegisterCustomer", "req-1")
    assert first != kaspro_request_id("driver-app", "RegisterCustomer", "req-2")
    assert first != kaspro_request_id("rider-app", "RegisterCustomer", "req-1")
    assert kaspro_request_id("ab", "c") != kaspro_request_id("a", "bc")


# Token.


def test_token_answer() -> None:
    token = parse_token(
        {"access_token": "tok", "token_type": "bearer", "expires_in": 3600, "scope": "partner"}
    )
    assert (token.value, token.expires_in_seconds) == ("tok", 3600.0)
    assert "tok" not in repr(token)
    assert parse_token({"access_token": "tok", "expires_in": "120"}).expires_in_seconds == 120.0


def test_token_without_expiry_lives_an_hour() -> None:
    assert parse_token({"access_token": "tok", "token_type": "Bearer"}).expires_in_seconds == 3600


@pytest.mark.parametrize(
    "body",
    [
        None,
        "tok",
        {},
        {"access_token": ""},
        {"access_token": 5},
        {"access_token": "tok", "token_type": "mac"},
        {"access_token": "tok", "expires_in": 0},
        {"access_token": "tok", "expires_in": "soon"},
        {"access_token": "tok", "expires_in": True},
    ],
)
def test_malformed_token_answer_is_unavailable(body: Any) -> None:
    with pytest.raises(KasProUnavailable):
        parse_token(body)


def test_token_refusal_reason_is_safe() -> None:
    refusal = {"error": "invalid_client", "error_description": "Bad client credentials"}
    assert token_refusal(refusal) == "token refused: invalid_client"
    assert token_refusal({"error": "<script>secret 0812</script>"}) == "token refused"
    assert token_refusal("nope") == "token refused"


# Register customer.


def test_register_success_returns_response_id() -> None:
    body = json.loads('{"responseId": "REG20240101", "message": "Berhasil", "code": 0}')
    assert parse_register_customer(body) == "REG20240101"


def test_register_response_id_with_trailing_space_key() -> None:
    assert parse_register_customer({"responseId ": "REG1", "code": 0}) == "REG1"
    assert parse_register_customer({"code": "0"}) == ""


def test_register_failure_with_trailing_space_key_is_a_rejection() -> None:
    body = json.loads(
        '{"responseId ": "REG1", "code": 110006, "message": "Mobile number already registered"}'
    )
    with pytest.raises(KasProRejected) as caught:
        parse_register_customer(body)
    assert caught.value.rejection is Rejection.CUSTOMER_ALREADY_REGISTERED
    assert caught.value.code == 110006
    assert caught.value.message == "Mobile number already registered"


def test_code_as_string_is_read() -> None:
    with pytest.raises(KasProRejected) as caught:
        parse_register_customer({"code": "110006", "message": "Mobile number already registered"})
    assert caught.value.code == 110006
    assert peek_code({"code": " 0 "}) == 0


# OTP.


def test_get_otp_success_returns_expiry() -> None:
    assert parse_get_otp({"message": "Berhasil", "code": 0, "data": {"expiry": 300}}) == 300
    assert parse_get_otp({"message": "Berhasil", "code": "0", "data": {"expiry": "120"}}) == 120


@pytest.mark.parametrize(
    "data", [None, {}, {"expiry": None}, {"expiry": "5 min"}, {"expiry": -1}, {"expiry": [300]}]
)
def test_get_otp_without_readable_expiry_is_unavailable(data: Any) -> None:
    body: dict[str, Any] = {"message": "Berhasil", "code": 0}
    if data is not None:
        body["data"] = data
    with pytest.raises(KasProUnavailable):
        parse_get_otp(body)


def test_get_otp_customer_not_found() -> None:
    with pytest.raises(KasProRejected) as caught:
        parse_get_otp({"code": 110005, "message": "Customer not found"})
    assert caught.value.rejection is Rejection.CUSTOMER_NOT_FOUND


def test_validate_otp() -> None:
    parse_validate_otp({"message": "Berhasil", "code": 0})
    for code, rejection in [(120001, Rejection.OTP_INVALID), (120002, Rejection.OTP_EXPIRED)]:
        with pytest.raises(KasProRejected) as caught:
            parse_validate_otp({"code": code, "message": "no"})
        assert caught.value.rejection is rejection


# eKYC.


def test_ekyc_success_on_the_seed_body_keeps_values_unchanged() -> None:
    assert parse_ekyc_upgrade(json.loads(SEED_EKYC_SUCCESS)) == KycIdentity(
        id_card_number="19xxxxxxxxxx001",
        name="Dxxxx Pxxxx Pxxxxxx",
        birth_place="Txxxxxxxxxxx",
        birth_date="dd-mm-yyyy",
        gender="Pxxxxxxxxx",
        blood_type="-",
        address="JL. xxxxxx",
        rt_rw="xxx/yyy",
        village_district="Pxxxxx Lxxxxxx",
        sub_district="Kxxxxxx Bxxxxxxx",
        district="Txxxxxx Pxxxxx",
        province="Kxxxxxxx Bxxxxx Bxxxxxxx",
        religion="Ixxxx",
        marital_status="xxxxxxxxx",
        occupation="Pxxxxxxxxxxxxx",
        nationality="WNI",
        id_expiry_date="SEUMUR HIDUP",
    )


def test_ekyc_missing_fields_are_empty() -> None:
    identity = parse_ekyc_upgrade({"code": 0, "data": {"idCardNumber": "3171014501900001"}})
    assert identity.id_card_number == "3171014501900001"
    assert identity.name == ""
    assert identity.blood_type == ""


def test_ekyc_failure_on_the_seed_body() -> None:
    with pytest.raises(KasProRejected) as caught:
        parse_ekyc_upgrade(json.loads(SEED_EKYC_FAIL))
    assert caught.value.rejection is Rejection.CUSTOMER_NOT_FOUND
    assert caught.value.message == "Customer not found"


def test_ekyc_image_rejected() -> None:
    with pytest.raises(KasProRejected) as caught:
        parse_ekyc_upgrade({"code": 130001, "message": "Invalid image"})
    assert caught.value.rejection is Rejection.IMAGE_REJECTED


def test_ekyc_success_without_data_is_unavailable() -> None:
    with pytest.raises(KasProUnavailable):
        parse_ekyc_upgrade({"code": 0, "message": "Berhasil"})
    with pytest.raises(KasProUnavailable, match="malformed field name"):
        parse_ekyc_upgrade({"code": 0, "data": {"name": {"first": "x"}}})


# Account inquiry.


def test_account_inquiry_success() -> None:
    assert parse_account_inquiry(ACCOUNT_SUCCESS) == Account(
        mobile_number=MOBILE,
        first_name="Budi",
        middle_name="",
        last_name="Santoso",
        full_name="Budi Santoso",
        email="budi@example.com",
        account_type=AccountType.PREMIUM,
        account_status=AccountStatus.ACTIVE,
        customer_type=CustomerType.SUBSCRIBER,
        kyc_status=KycStatus.VERIFIED,
        balance=Balance(pocket_id="2", available_idr=150000),
    )


@pytest.mark.parametrize(
    "mobile",
    [6281234567890, 81234567890, "6281234567890", "+6281234567890", "081234567890", "81234567890"],
)
def test_account_mobile_number_in_any_accepted_form(mobile: Any) -> None:
    assert parse_account_inquiry(account_body(mobileNumber=mobile)).mobile_number == MOBILE


@pytest.mark.parametrize("mobile", [None, 12345, "021555123", "0812-3456-7890", 6.28e12, True])
def test_account_malformed_mobile_number_is_unavailable(mobile: Any) -> None:
    with pytest.raises(KasProUnavailable, match="malformed mobile number"):
        parse_account_inquiry(account_body(mobileNumber=mobile))


def test_account_vocabulary_is_case_insensitive_and_unknown_words_are_unknown() -> None:
    account = parse_account_inquiry(
        account_body(
            accountType="BASIC",
            accountStatus=" blocked ",
            customerType="merchant",
            kycStatus="PeNdInG",
        )
    )
    assert account.account_type is AccountType.BASIC
    assert account.account_status is AccountStatus.BLOCKED
    assert account.customer_type is CustomerType.MERCHANT
    assert account.kyc_status is KycStatus.PENDING

    odd = parse_account_inquiry(
        account_body(accountType="Gold", accountStatus="", customerType=None, kycStatus="Done")
    )
    assert odd.account_type is AccountType.UNKNOWN
    assert odd.account_status is AccountStatus.UNKNOWN
    assert odd.customer_type is CustomerType.UNKNOWN
    assert odd.kyc_status is KycStatus.UNKNOWN


def test_account_missing_optional_strings_are_empty() -> None:
    body = account_body()
    for key in ("firstName", "middleName", "lastName", "fullName", "email"):
        del body["data"][key]
    account = parse_account_inquiry(body)
    assert (account.first_name, account.full_name, account.email) == ("", "", "")


@pytest.mark.parametrize(
    ("amount", "expected"), [("150000", 150000), ("0", 0), (2_000_000, 2_000_000)]
)
def test_account_balance_whole_rupiah(amount: Any, expected: int) -> None:
    assert parse_account_inquiry(amount_body(amount)).balance.available_idr == expected


@pytest.mark.parametrize(
    "amount",
    ["4xxx9", "", " 150000", "12.5", "-5", -5, 12.5, 150000.0, "1e5", "\uff11\uff12", None, True],
)
def test_account_malformed_balance_is_unavailable_never_zero(amount: Any) -> None:
    with pytest.raises(KasProUnavailable, match="malformed amount"):
        parse_account_inquiry(amount_body(amount))


def test_account_without_balance_is_unavailable() -> None:
    body = account_body()
    del body["data"]["balance"]
    with pytest.raises(KasProUnavailable):
        parse_account_inquiry(body)


def test_account_customer_not_found() -> None:
    with pytest.raises(KasProRejected) as caught:
        parse_account_inquiry({"code": 110005, "message": "Customer not found"})
    assert caught.value.rejection is Rejection.CUSTOMER_NOT_FOUND


# The seed's asynchronous answer, and garbage.


def test_seed_in_process_body_has_masked_amounts_that_never_parse() -> None:
    body = json.loads(SEED_BANK_TRANSFER_IN_PROCESS)
    assert peek_code(body) == 1
    assert classify(1) == (Outcome.IN_PROCESS, None)
    for key in ("amount", "price", "serviceFee"):
        with pytest.raises(KasProUnavailable, match="malformed amount"):
            parse_amount(body["data"][key])


@pytest.mark.parametrize(
    "parse", [parse_register_customer, parse_get_otp, parse_validate_otp, parse_ekyc_upgrade]
)
def test_in_process_is_unexpected_for_onboarding_calls(parse: Any) -> None:
    with pytest.raises(KasProUnavailable, match="in-process"):
        parse(json.loads(SEED_BANK_TRANSFER_IN_PROCESS))


PARSERS = [
    parse_register_customer,
    parse_get_otp,
    parse_validate_otp,
    parse_ekyc_upgrade,
    parse_account_inquiry,
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("body", GARBAGE)
def test_garbage_is_unavailable(parse: Any, body: Any) -> None:
    with pytest.raises(KasProUnavailable) as caught:
        parse(body)
    assert not isinstance(caught.value, KasProAuthError)


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("code", [2, 999999, "500"])
def test_unknown_code_is_unavailable(parse: Any, code: Any) -> None:
    with pytest.raises(KasProUnavailable, match="unknown code"):
        parse({"code": code, "message": "Berhasil", "data": {}})


@pytest.mark.parametrize("code", [401001, 401002, 401003])
def test_gateway_codes_are_auth_errors(code: int) -> None:
    with pytest.raises(KasProAuthError) as caught:
        parse_validate_otp({"code": code, "message": "Invalid signature"})
    assert caught.value.code == code

"""The `/_sandbox/` control endpoints and the fault table they arm."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from kaspro_sandbox import ocr_identity

from .partner_client import JPEG, Partner

pytestmark = pytest.mark.asyncio(loop_scope="module")

NUMBER = "081234567890"
INQUIRY = "/customer-account-inquiry/"
GET_OTP = "/pil-partner-get-otp/"
NOT_FOUND = {"code": 110005, "message": "Customer not found"}
ISO_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


async def arm(partner: Partner, **fault: Any) -> None:
    response = await partner.http.post("/_sandbox/faults", json=fault)
    assert response.status_code == 200, response.text


# OTP read-back


@pytest.mark.parametrize("form", ["081234567890", "6281234567890", "+6281234567890"])
async def test_otp_can_be_read_back_in_any_number_form(partner: Partner, form: str) -> None:
    await partner.register(NUMBER)
    await partner.get(GET_OTP, NUMBER)
    response = await partner.http.get("/_sandbox/otp", params={"mobileNumber": form})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"mobileNumber", "otp", "message", "channel", "expiresAt"}
    assert body["mobileNumber"] == NUMBER
    assert re.fullmatch(r"[0-9]{6}", body["otp"])
    assert body["message"] == (
        f"Kode OTP KasPro Anda {body['otp']}. Berlaku 5 menit. "
        "JANGAN berikan kode ini kepada siapa pun."
    )
    assert body["channel"] == "WhatsApp"
    assert ISO_UTC.fullmatch(body["expiresAt"])


async def test_no_otp_is_404(partner: Partner) -> None:
    response = await partner.http.get("/_sandbox/otp", params={"mobileNumber": NUMBER})
    assert response.status_code == 404
    assert response.json() == {"error": "no OTP for this number"}


async def test_invalid_number_is_400(partner: Partner) -> None:
    response = await partner.http.get("/_sandbox/otp", params={"mobileNumber": "12345"})
    assert response.status_code == 400


async def test_expiring_an_otp_makes_validation_fail(partner: Partner) -> None:
    await partner.register(NUMBER)
    await partner.get(GET_OTP, NUMBER)
    otp = (await partner.http.get("/_sandbox/otp", params={"mobileNumber": NUMBER})).json()
    expired = await partner.http.post("/_sandbox/otp/expire", params={"mobileNumber": NUMBER})
    assert expired.status_code == 200
    response = await partner.post("/validate-otp/", {"mobileNumber": NUMBER, "otp": otp["otp"]})
    assert response.json()["code"] == 120002


async def test_expiring_a_missing_otp_is_404(partner: Partner) -> None:
    response = await partner.http.post("/_sandbox/otp/expire", params={"mobileNumber": NUMBER})
    assert response.status_code == 404


# customers


async def test_customers_view(partner: Partner) -> None:
    assert (await partner.http.get("/_sandbox/customers")).json() == []
    await partner.register(NUMBER, request_id="REQ00000000000AA")
    customers = (await partner.http.get("/_sandbox/customers")).json()
    assert [customer["mobileNumber"] for customer in customers] == [NUMBER]
    one = (await partner.http.get("/_sandbox/customers/+6281234567890")).json()
    assert one == customers[0]
    assert one["registerRequestId"] == "REQ00000000000AA"
    assert one["balance"] == 0
    assert one["accountType"] == "Basic"
    assert one["kycStatus"] == "Unverified"


async def test_unknown_customer_view_is_404(partner: Partner) -> None:
    response = await partner.http.get(f"/_sandbox/customers/{NUMBER}")
    assert response.status_code == 404


async def test_setting_a_balance(partner: Partner) -> None:
    await partner.register(NUMBER)
    url = f"/_sandbox/customers/{NUMBER}/balance"
    response = await partner.http.post(url, json={"balance": 2_000_000})
    assert response.json()["balance"] == 2_000_000
    data = (await partner.get(INQUIRY, NUMBER)).json()["data"]
    assert data["balance"]["availableBalance"] == "2000000"


@pytest.mark.parametrize("body", [{"balance": "100"}, {"balance": -1}, {"balance": 1.5}, {}])
async def test_setting_a_bad_balance_is_400(partner: Partner, body: dict[str, Any]) -> None:
    await partner.register(NUMBER)
    response = await partner.http.post(f"/_sandbox/customers/{NUMBER}/balance", json=body)
    assert response.status_code == 400


async def test_setting_the_balance_of_an_unknown_customer_is_404(partner: Partner) -> None:
    response = await partner.http.post(f"/_sandbox/customers/{NUMBER}/balance", json={"balance": 1})
    assert response.status_code == 404


# OCR override


async def test_ocr_override_applies_to_the_next_ekyc_only(partner: Partner) -> None:
    await partner.register(NUMBER)
    response = await partner.http.post(
        "/_sandbox/ocr-override", json={"mobileNumber": "6281234567890", "idCardNumber": "12AB"}
    )
    assert response.json() == {"mobileNumber": NUMBER, "idCardNumber": "12AB"}
    first = (await partner.ekyc(NUMBER)).json()["data"]
    assert first["idCardNumber"] == "12AB"
    assert first["birthDate"] == ocr_identity(JPEG, "")["birthDate"]
    second = (await partner.ekyc(NUMBER)).json()["data"]
    assert second["idCardNumber"] == ocr_identity(JPEG, "")["idCardNumber"]


async def test_ocr_override_survives_a_failed_ekyc(partner: Partner) -> None:
    await partner.register(NUMBER)
    await partner.http.post(
        "/_sandbox/ocr-override", json={"mobileNumber": NUMBER, "idCardNumber": "0"}
    )
    assert (await partner.ekyc(NUMBER, id_card=b"GIF")).json()["code"] == 130001
    assert (await partner.ekyc(NUMBER)).json()["data"]["idCardNumber"] == "0"


# request log


async def test_request_log_records_partner_calls(partner: Partner) -> None:
    await partner.register(NUMBER, request_id="REQ0000000000007")
    await partner.get(INQUIRY, "081299990000")
    log = (await partner.http.get("/_sandbox/requests")).json()
    assert [(entry["method"], entry["path"]) for entry in log] == [
        ("POST", "/authentication-server/oauth/token"),
        ("POST", "/register-customer/"),
        ("GET", INQUIRY),
    ]
    register = log[1]
    assert register["mobileNumber"] == "0812****7890"
    assert register["requestId"] == "REQ0000000000007"
    assert register["code"] == 0
    assert register["httpStatus"] == 200
    assert register["fault"] is None
    assert ISO_UTC.fullmatch(register["time"])
    assert log[2]["code"] == 110005
    assert NUMBER not in str(log)

    cleared = await partner.http.delete("/_sandbox/requests")
    assert cleared.json() == {"cleared": 3}
    assert (await partner.http.get("/_sandbox/requests")).json() == []


# faults


async def test_garbage_fault(partner: Partner) -> None:
    await arm(partner, path=INQUIRY, kind="garbage")
    response = await partner.get(INQUIRY, NUMBER)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError, match="Expecting"):
        response.json()
    assert (await partner.get(INQUIRY, NUMBER)).json() == NOT_FOUND


async def test_http_500_fault(partner: Partner) -> None:
    await arm(partner, path=INQUIRY, kind="http_500")
    assert (await partner.get(INQUIRY, NUMBER)).status_code == 500
    assert (await partner.get(INQUIRY, NUMBER)).status_code == 200


async def test_unknown_code_fault(partner: Partner) -> None:
    await arm(partner, path=INQUIRY, kind="unknown_code")
    response = await partner.get(INQUIRY, NUMBER)
    assert response.status_code == 200
    assert response.json() == {"code": 987654, "message": "Unexpected"}
    log = (await partner.http.get("/_sandbox/requests")).json()
    assert log[-1]["fault"] == "unknown_code"
    assert log[-1]["code"] == 987654


async def test_delay_fault_answers_normally_after_the_delay(partner: Partner) -> None:
    await arm(partner, path=INQUIRY, kind="delay", delaySeconds=0.2)
    started = time.perf_counter()
    response = await partner.get(INQUIRY, NUMBER)
    assert time.perf_counter() - started >= 0.2
    assert response.json() == NOT_FOUND


async def test_delayed_request_is_carried_out(partner: Partner) -> None:
    await arm(partner, path="/register-customer/", kind="delay", delaySeconds=0.05)
    assert (await partner.register(NUMBER)).json()["code"] == 0
    assert len((await partner.http.get("/_sandbox/customers")).json()) == 1


async def test_faulted_request_is_not_carried_out(partner: Partner) -> None:
    await arm(partner, path="/register-customer/", kind="http_500")
    assert (await partner.register(NUMBER)).status_code == 500
    assert (await partner.http.get("/_sandbox/customers")).json() == []


async def test_fault_fires_the_given_number_of_times(partner: Partner) -> None:
    await arm(partner, path=INQUIRY, kind="http_500", times=2)
    statuses = [(await partner.get(INQUIRY, NUMBER)).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


async def test_fault_on_the_token_endpoint(partner: Partner) -> None:
    await arm(partner, path="/authentication-server/oauth/token", kind="http_500")
    assert (await partner.fetch_token()).status_code == 500
    assert (await partner.fetch_token()).status_code == 200


async def test_refused_calls_do_not_use_up_a_fault(partner: Partner) -> None:
    await arm(partner, path=INQUIRY, kind="http_500")
    assert (await partner.get(INQUIRY, NUMBER, secret="wrong")).status_code == 401
    assert (await partner.get(INQUIRY, NUMBER)).status_code == 500


async def test_faults_can_be_listed_and_cleared(partner: Partner) -> None:
    await arm(partner, path=INQUIRY, kind="delay", delaySeconds=1.5, times=3)
    listed = (await partner.http.get("/_sandbox/faults")).json()
    assert listed == [
        {
            "id": listed[0]["id"],
            "path": INQUIRY,
            "kind": "delay",
            "probability": 1.0,
            "times": 3,
            "remaining": 3,
            "delaySeconds": 1.5,
            "jitterSeconds": 0.0,
            "matched": 0,
            "fired": 0,
        }
    ]
    assert (await partner.http.delete("/_sandbox/faults")).json() == []
    assert (await partner.get(INQUIRY, NUMBER)).json() == NOT_FOUND


@pytest.mark.parametrize(
    "fault",
    [
        {"path": "/nowhere/", "kind": "garbage"},
        {"path": INQUIRY, "kind": "explode"},
        {"path": INQUIRY, "kind": "delay"},
        {"path": INQUIRY, "kind": "delay", "delaySeconds": -1},
        {"path": INQUIRY, "kind": "garbage", "times": 0},
    ],
)
async def test_invalid_faults_are_400(partner: Partner, fault: dict[str, Any]) -> None:
    response = await partner.http.post("/_sandbox/faults", json=fault)
    assert response.status_code == 400
    assert "error" in response.json()


# tokens and reset


async def test_expiring_tokens_forces_a_new_one(partner: Partner) -> None:
    token = await partner.token()
    assert (await partner.http.post("/_sandbox/tokens/expire")).json() == {"expired": 1}
    response = await partner.get(INQUIRY, NUMBER, token=token)
    assert response.json() == {"code": 401002, "message": "Invalid or expired token"}


async def test_reset_forgets_everything(partner: Partner) -> None:
    token = await partner.token()
    await partner.register(NUMBER)
    await partner.get(GET_OTP, NUMBER)
    await arm(partner, path=INQUIRY, kind="garbage")
    assert (await partner.http.post("/_sandbox/reset")).json() == {"reset": True}
    assert (await partner.http.get("/_sandbox/customers")).json() == []
    assert (await partner.http.get("/_sandbox/requests")).json() == []
    assert (await partner.http.get("/_sandbox/faults")).json() == []
    otp = await partner.http.get("/_sandbox/otp", params={"mobileNumber": NUMBER})
    assert otp.status_code == 404
    response = await partner.get(INQUIRY, NUMBER, token=token)
    assert response.json()["code"] == 401002

"""The gateway's front door: OAuth token, HTTP signature, Date freshness, bearer token."""

from __future__ import annotations

import pytest

from .partner_client import HMAC_KEY, Partner, sign, signature_header

pytestmark = pytest.mark.asyncio(loop_scope="module")

INQUIRY = "/customer-account-inquiry/"
UNKNOWN_NUMBER = "081299990000"
NOT_FOUND = {"code": 110005, "message": "Customer not found"}
BAD_SIGNATURE = {"code": 401001, "message": "Invalid signature"}
BAD_TOKEN = {"code": 401002, "message": "Invalid or expired token"}
BAD_DATE = {"code": 401003, "message": "Request date out of range"}


async def test_token_for_good_credentials(partner: Partner) -> None:
    response = await partner.fetch_token()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert isinstance(body["access_token"], str)
    assert body["access_token"]


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [("wallet-dev", "wrong"), ("someone-else", "wallet-dev-secret"), ("", "")],
)
async def test_token_refused_for_bad_credentials(
    partner: Partner, client_id: str, client_secret: str
) -> None:
    response = await partner.fetch_token(client_id, client_secret)
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Bad client credentials",
    }


async def test_token_refused_for_another_grant_type(partner: Partner) -> None:
    response = await partner.http.post(
        "/authentication-server/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "wallet-dev",
            "client_secret": "wallet-dev-secret",
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_signed_call_passes_the_gateway(partner: Partner) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER)
    assert response.status_code == 200
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("header", ["KasPro-Signature", "Partner-Key"])
async def test_missing_signature_headers_are_refused(partner: Partner, header: str) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, drop=(header,))
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


async def test_signature_with_the_wrong_secret_is_refused(partner: Partner) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, secret="not-the-secret")
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


async def test_wrong_key_is_refused_even_when_signed_with_the_right_secret(
    partner: Partner,
) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, key="other-partner")
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


async def test_partner_key_must_match_key_id(partner: Partner) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, headers={"Partner-Key": "other"})
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda sig: signature_header(HMAC_KEY, sig).replace("Signature ", ""), id="no-scheme"
        ),
        pytest.param(
            lambda sig: signature_header(HMAC_KEY, sig).replace("hmac-sha256", "hmac-sha1"),
            id="algorithm",
        ),
        pytest.param(
            lambda sig: signature_header(HMAC_KEY, sig).replace(
                '"(request-target) date"', '"date"'
            ),
            id="headers",
        ),
        pytest.param(
            lambda sig: signature_header(
                HMAC_KEY, sig.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
            ),
            id="not-urlencoded",
        ),
        pytest.param(lambda sig: f'Signature keyId="{HMAC_KEY}"', id="incomplete"),
        pytest.param(lambda sig: "garbage", id="garbage"),
    ],
)
async def test_malformed_signature_header_is_refused(partner: Partner, forge: object) -> None:
    date = partner.date()
    good = sign("wallet-dev-hmac-secret", "GET", INQUIRY, date)
    assert callable(forge)
    response = await partner.get(
        INQUIRY, UNKNOWN_NUMBER, date=date, headers={"KasPro-Signature": forge(good)}
    )
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


@pytest.mark.parametrize("skew", [-301.0, 301.0, -3600.0])
async def test_stale_date_is_refused(partner: Partner, skew: float) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, date=partner.date(skew))
    assert response.status_code == 401
    assert response.json() == BAD_DATE


async def test_date_within_the_allowed_skew_is_accepted(partner: Partner) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, date=partner.date(-290.0))
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("date", ["", "2021-10-04T07:00:30Z", "Mon, 04 Oct 2021 07:00:30 +0000"])
async def test_unparsable_date_is_refused(partner: Partner, date: str) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, date=date)
    assert response.status_code == 401
    assert response.json() == BAD_DATE


async def test_missing_date_is_refused(partner: Partner) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, drop=("Date",))
    assert response.status_code == 401
    assert response.json() == BAD_DATE


async def test_unknown_token_is_refused(partner: Partner) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, token="never-issued")
    assert response.status_code == 401
    assert response.json() == BAD_TOKEN


@pytest.mark.parametrize("authorization", ["Bearer", "Basic d2FsbGV0LWRldg==", "never-issued"])
async def test_malformed_authorization_is_refused(partner: Partner, authorization: str) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json() == BAD_TOKEN


async def test_missing_authorization_is_refused(partner: Partner) -> None:
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, drop=("Authorization",))
    assert response.status_code == 401
    assert response.json() == BAD_TOKEN


async def test_token_expires_after_its_lifetime(partner: Partner) -> None:
    token = await partner.token()
    partner.clock.advance(3599)
    assert (await partner.get(INQUIRY, UNKNOWN_NUMBER, token=token)).json() == NOT_FOUND
    partner.clock.advance(1)
    response = await partner.get(INQUIRY, UNKNOWN_NUMBER, token=token)
    assert response.status_code == 401
    assert response.json() == BAD_TOKEN


async def test_query_string_is_not_part_of_the_signed_path(partner: Partner) -> None:
    date = partner.date()
    signed_with_query = sign(
        "wallet-dev-hmac-secret", "GET", f"{INQUIRY}?mobileNumber={UNKNOWN_NUMBER}", date
    )
    response = await partner.get(
        INQUIRY,
        UNKNOWN_NUMBER,
        date=date,
        headers={"KasPro-Signature": signature_header(HMAC_KEY, signed_with_query)},
    )
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


async def test_signature_covers_the_method(partner: Partner) -> None:
    date = partner.date()
    signed_as_post = sign("wallet-dev-hmac-secret", "POST", INQUIRY, date)
    response = await partner.get(
        INQUIRY,
        UNKNOWN_NUMBER,
        date=date,
        headers={"KasPro-Signature": signature_header(HMAC_KEY, signed_as_post)},
    )
    assert response.json() == BAD_SIGNATURE


async def test_refusals_are_logged(partner: Partner) -> None:
    await partner.get(INQUIRY, UNKNOWN_NUMBER, secret="wrong")
    log = (await partner.http.get("/_sandbox/requests")).json()
    assert log[-1]["path"] == INQUIRY
    assert log[-1]["code"] == 401001
    assert log[-1]["httpStatus"] == 401
    assert log[-1]["mobileNumber"] == "0812****0000"

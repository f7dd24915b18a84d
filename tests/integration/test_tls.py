"""TLS on the gRPC port: server certificates, mutual TLS, certificate callers, config errors.

The certificates are made here, per test session, with the ``openssl`` command line: a
throwaway CA, a server certificate for 127.0.0.1 and localhost (subjectAltName), client
certificates, and a second CA whose certificates the service must not accept.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wallet.v1 import account_service_pb2, account_service_pb2_grpc

from wallet_service.config import ConfigError, TlsSettings, load

from .conftest import (
    APP,
    APP_TOKEN,
    DEADLINE,
    DISPATCH,
    LOCAL,
    Harness,
    Metadata,
    assert_failure,
    bearer,
    expect_failure,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

# conftest.CALLERS has "dispatch" (dispatch) and "backend" (app) behind tokens; the
# certificate callers below are the same two callers, plus a CN nobody is mapped to.
DISPATCH_CN = "dispatch-svc"
APP_CN = "app-backend"
CERTIFICATE_CALLERS = f"dispatch:dispatch:{DISPATCH_CN};backend:app:{APP_CN}"


# A throwaway PKI.


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path

    def pair(self) -> tuple[bytes, bytes]:
        return self.key.read_bytes(), self.certificate.read_bytes()


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    dispatch: Issued  # CN dispatch-svc
    app: Issued  # CN app-backend
    stranger: Issued  # signed by our CA, CN mapped to no caller
    other_ca: Issued
    impostor: Issued  # CN dispatch-svc, signed by the other CA
    encrypted_key: Path  # the server key, encrypted with a passphrase
    garbage: Path  # not PEM


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _new_ca(directory: Path, name: str) -> Issued:
    config = directory / f"{name}.cnf"
    config.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3\n"
        f"[dn]\nCN = {name}\n"
        "[v3]\nbasicConstraints = critical, CA:TRUE\n"
        "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
    )
    issued = Issued(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        directory,
        *("req", "-x509", "-config", config.name, "-newkey", "ec"),
        *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", issued.key.name, "-out", issued.certificate.name, "-days", "2"),
    )
    return issued


def _issue(directory: Path, ca: Issued, name: str, common_name: str, *, server: bool) -> Issued:
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "basicConstraints = CA:FALSE\n"
        + (
            "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n"
            if server
            else "extendedKeyUsage = clientAuth\n"
        )
    )
    issued = Issued(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        directory,
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", issued.key.name, "-out", f"{name}.csr"),
        *("-subj", f"/CN={common_name}"),
    )
    _openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", ca.certificate.name),
        *("-CAkey", ca.key.name, "-CAcreateserial", "-days", "2"),
        *("-extfile", extensions.name, "-out", issued.certificate.name),
    )
    return issued


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _new_ca(directory, "test-ca")
    other_ca = _new_ca(directory, "other-ca")
    server = _issue(directory, ca, "server", "localhost", server=True)
    encrypted = directory / "server-encrypted.key"
    _openssl(
        directory,
        *("pkey", "-in", server.key.name, "-aes256", "-passout", "pass:secret"),
        *("-out", encrypted.name),
    )
    garbage = directory / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    return Pki(
        ca=ca,
        server=server,
        dispatch=_issue(directory, ca, "dispatch", DISPATCH_CN, server=False),
        app=_issue(directory, ca, "app", APP_CN, server=False),
        stranger=_issue(directory, ca, "stranger", "stranger-svc", server=False),
        other_ca=other_ca,
        impostor=_issue(directory, other_ca, "impostor", DISPATCH_CN, server=False),
        encrypted_key=encrypted,
        garbage=garbage,
    )


def tls_env(pki: Pki, *, mutual: bool = False) -> dict[str, str]:
    env = {
        "WALLET_TLS_CERT_FILE": str(pki.server.certificate),
        "WALLET_TLS_KEY_FILE": str(pki.server.key),
    }
    if mutual:
        env["WALLET_TLS_CLIENT_CA_FILE"] = str(pki.ca.certificate)
        env["WALLET_TLS_CLIENT_CALLERS"] = CERTIFICATE_CALLERS
    return env


def tls_settings(pki: Pki, *, mutual: bool = False) -> TlsSettings:
    """The settings ``load`` makes of the WALLET_TLS_* variables (tokens as in conftest)."""
    env = tls_env(pki, mutual=mutual)
    env["WALLET_CALLER_TOKENS"] = "backend:app:app-token-123;dispatch:dispatch:dispatch-token-1"
    tls = load(env).tls
    assert tls is not None
    return tls


# Clients.


@dataclass
class Client:
    accounts: account_service_pb2_grpc.AccountServiceAsyncStub
    health: health_pb2_grpc.HealthStub

    async def get_account(self, metadata: Metadata = ()) -> account_service_pb2.GetAccountResponse:
        return await self.accounts.GetAccount(
            account_service_pb2.GetAccountRequest(mobile_number=LOCAL),
            metadata=metadata,
            timeout=DEADLINE,
        )


def tls_client(h: Harness, pki: Pki, certificate: Issued | None = None) -> Client:
    """Stubs over a TLS channel that trusts our CA, with a client certificate if given."""
    key, chain = certificate.pair() if certificate is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.certificate.read_bytes(),
        private_key=key,
        certificate_chain=chain,
    )
    channel = grpc.aio.secure_channel(h.target, credentials)
    h.channels.append(channel)
    return Client(
        account_service_pb2_grpc.AccountServiceStub(channel),
        health_pb2_grpc.HealthStub(channel),
    )


async def start_tls(h: Harness, pki: Pki, *, mutual: bool = False) -> None:
    """A customer registered over plaintext, then the service restarted on TLS."""
    await h.register()
    await h.restart(h.with_config(tls=tls_settings(pki, mutual=mutual)))


# TLS.


async def test_tls_serves_a_caller_with_a_token(h: Harness, pki: Pki) -> None:
    await start_tls(h, pki)
    client = tls_client(h, pki)

    answer = await client.get_account(APP)

    assert answer.account.mobile_number == "+6281234567890"
    health = await client.health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_tls_without_client_ca_still_needs_a_token(h: Harness, pki: Pki) -> None:
    await start_tls(h, pki)
    # A client certificate is not asked for, so it identifies nobody.
    client = tls_client(h, pki, pki.dispatch)

    failure = await expect_failure(client.get_account())

    assert_failure(failure, UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_a_plaintext_client_cannot_talk_to_a_tls_port(h: Harness, pki: Pki) -> None:
    await start_tls(h, pki)
    before = await h.kaspro_requests()

    failure = await expect_failure(h.get_account())  # the harness's channel is plaintext

    assert failure.code == UNAVAILABLE
    assert await h.kaspro_requests() == before


async def test_a_client_that_does_not_trust_the_server_certificate_fails(
    h: Harness, pki: Pki
) -> None:
    await start_tls(h, pki)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.other_ca.certificate.read_bytes()
    )
    channel = grpc.aio.secure_channel(h.target, credentials)
    h.channels.append(channel)
    accounts = account_service_pb2_grpc.AccountServiceStub(channel)

    failure = await expect_failure(
        accounts.GetAccount(
            account_service_pb2.GetAccountRequest(mobile_number=LOCAL),
            metadata=APP,
            timeout=DEADLINE,
        )
    )

    assert failure.code == UNAVAILABLE


# Mutual TLS: a client certificate identifies the caller.


async def test_a_known_client_certificate_is_its_caller_without_a_token(
    h: Harness, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tls(h, pki, mutual=True)
    dispatch = tls_client(h, pki, pki.dispatch)

    with caplog.at_level(logging.INFO, logger="wallet_service.calls"):
        answer = await dispatch.get_account()

    assert answer.account.mobile_number == "+6281234567890"
    calls = [r for r in caplog.records if r.name == "wallet_service.calls"]
    assert [(r.__dict__["method"], r.__dict__["caller"]) for r in calls] == [
        ("/wallet.v1.AccountService/GetAccount", "dispatch")
    ]
    # Health stays open to anyone who completes the handshake.
    health = await dispatch.health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_certificate_caller_has_its_roles_only(h: Harness, pki: Pki) -> None:
    await start_tls(h, pki, mutual=True)
    dispatch = tls_client(h, pki, pki.dispatch)
    app = tls_client(h, pki, pki.app)
    before = await h.kaspro_requests()
    request = account_service_pb2.RegisterCustomerRequest(
        request_id="by-certificate", mobile_number="085712345678", first_name="Sari"
    )

    failure = await expect_failure(dispatch.accounts.RegisterCustomer(request, timeout=DEADLINE))

    assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert "'dispatch'" in failure.message
    assert await h.kaspro_requests() == before
    # The app backend's certificate may register.
    registered = await app.accounts.RegisterCustomer(request, timeout=DEADLINE)
    assert registered.account.mobile_number == "+6285712345678"


async def test_a_matching_token_is_accepted_with_the_certificate(h: Harness, pki: Pki) -> None:
    await start_tls(h, pki, mutual=True)

    answer = await tls_client(h, pki, pki.dispatch).get_account(DISPATCH)

    assert answer.account.mobile_number == "+6281234567890"


def refused_caller(caplog: pytest.LogCaptureFixture) -> str:
    """The caller the call log names for the one refused call captured."""
    [caller] = [
        getattr(r, "caller", None)
        for r in caplog.records
        if r.name == "wallet_service.calls" and getattr(r, "code", "") == "UNAUTHENTICATED"
    ]
    assert isinstance(caller, str)
    return caller


@pytest.mark.parametrize(
    ("metadata", "logged_caller"),
    [
        (APP, "token of backend, certificate of dispatch"),
        (bearer("no-such-token-1"), "unknown token"),
        ((("authorization", "Basic abc"),), "unknown token"),
    ],
    ids=["another-callers-token", "unknown-token", "not-bearer"],
)
async def test_a_token_that_disagrees_with_the_certificate_is_unauthenticated(
    h: Harness, pki: Pki, metadata: Metadata, logged_caller: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The app token is valid, but names another caller than the certificate: neither
    # credential wins, the call is refused.
    await start_tls(h, pki, mutual=True)
    caplog.set_level(logging.INFO)

    failure = await expect_failure(tls_client(h, pki, pki.dispatch).get_account(metadata))

    assert_failure(failure, UNAUTHENTICATED, "UNAUTHENTICATED")
    assert APP_TOKEN not in failure.message
    assert refused_caller(caplog) == logged_caller


@pytest.mark.parametrize("metadata", [(), APP], ids=["no-token", "valid-token"])
async def test_an_unknown_common_name_is_unauthenticated(
    h: Harness, pki: Pki, metadata: Metadata, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tls(h, pki, mutual=True)
    before = await h.kaspro_requests()
    caplog.set_level(logging.INFO)

    failure = await expect_failure(tls_client(h, pki, pki.stranger).get_account(metadata))

    assert_failure(failure, UNAUTHENTICATED, "UNAUTHENTICATED")
    assert "stranger-svc" in failure.message
    assert await h.kaspro_requests() == before
    assert refused_caller(caplog) == "unknown certificate"


@pytest.mark.parametrize("certificate", ["impostor", None], ids=["other-ca", "none"])
async def test_without_a_certificate_of_our_ca_the_handshake_fails(
    h: Harness, pki: Pki, certificate: str | None
) -> None:
    # The impostor's CN is dispatch-svc: the CA, not the name, decides.
    await start_tls(h, pki, mutual=True)
    client = tls_client(h, pki, pki.impostor if certificate else None)

    failure = await expect_failure(client.get_account(DISPATCH))

    assert failure.code == UNAVAILABLE


# WALLET_TLS_* settings.


def test_tls_settings_are_read_from_the_environment(pki: Pki) -> None:
    config = load(tls_env(pki, mutual=True))

    tls = config.tls
    assert tls is not None
    assert tls.mutual
    assert tls.certificate_chain == pki.server.certificate.read_bytes()
    assert tls.private_key == pki.server.key.read_bytes()
    assert tls.client_ca == pki.ca.certificate.read_bytes()
    assert {cn: (c.name, sorted(c.roles)) for cn, c in tls.client_callers.items()} == {
        DISPATCH_CN: ("dispatch", ["dispatch"]),
        APP_CN: ("backend", ["app"]),
    }
    # Certificate callers alone: no development token is made up next to them.
    assert config.callers == {}
    assert "PRIVATE KEY" not in repr(config)


def test_tls_without_a_client_ca_is_server_side_only(pki: Pki) -> None:
    tls = load(tls_env(pki)).tls

    assert tls is not None
    assert not tls.mutual
    assert tls.client_callers == {}


def test_no_tls_variables_mean_plaintext() -> None:
    assert load({}).tls is None


@pytest.mark.parametrize(
    ("variable", "path", "problem"),
    [
        ("WALLET_TLS_CERT_FILE", "missing.pem", "cannot read"),
        ("WALLET_TLS_KEY_FILE", "missing.pem", "cannot read"),
        ("WALLET_TLS_CLIENT_CA_FILE", "missing.pem", "cannot read"),
        ("WALLET_TLS_CERT_FILE", "", "cannot read"),  # a directory
        ("WALLET_TLS_CERT_FILE", "garbage", "not a PEM file"),
        ("WALLET_TLS_KEY_FILE", "garbage", "not a PEM file"),
        ("WALLET_TLS_CLIENT_CA_FILE", "garbage", "not a PEM file"),
        ("WALLET_TLS_KEY_FILE", "dispatch-key", "matching unencrypted private key"),
        ("WALLET_TLS_CERT_FILE", "server-key", "matching unencrypted private key"),
        ("WALLET_TLS_KEY_FILE", "server-cert", "matching unencrypted private key"),
        ("WALLET_TLS_KEY_FILE", "encrypted-key", "encrypted"),
        ("WALLET_TLS_CLIENT_CA_FILE", "server-key", "no usable CA certificate"),
    ],
)
def test_unusable_tls_files_are_config_errors(
    pki: Pki, variable: str, path: str, problem: str
) -> None:
    files = {
        "garbage": pki.garbage,
        "dispatch-key": pki.dispatch.key,
        "server-key": pki.server.key,
        "server-cert": pki.server.certificate,
        "encrypted-key": pki.encrypted_key,
        "": pki.garbage.parent,
    }
    env = tls_env(pki, mutual=True)
    env[variable] = str(files.get(path, pki.garbage.parent / path))

    with pytest.raises(ConfigError, match=variable) as caught:
        load(env)

    assert problem in str(caught.value)


@pytest.mark.parametrize("missing", ["WALLET_TLS_CERT_FILE", "WALLET_TLS_KEY_FILE"])
def test_a_certificate_needs_its_key_and_the_other_way_round(pki: Pki, missing: str) -> None:
    env = tls_env(pki)
    del env[missing]

    with pytest.raises(ConfigError, match="WALLET_TLS_CERT_FILE and WALLET_TLS_KEY_FILE"):
        load(env)


def test_certificate_callers_need_a_client_ca(pki: Pki) -> None:
    env = tls_env(pki, mutual=True)
    del env["WALLET_TLS_CLIENT_CA_FILE"]

    with pytest.raises(ConfigError, match="WALLET_TLS_CLIENT_CA_FILE"):
        load(env)


def test_a_client_ca_needs_a_server_certificate(pki: Pki) -> None:
    env = {"WALLET_TLS_CLIENT_CA_FILE": str(pki.ca.certificate)}

    with pytest.raises(ConfigError, match="WALLET_TLS_CERT_FILE"):
        load(env)


PRODUCTION_KASPRO = {
    "WALLET_KASPRO_BASE_URL": "https://apigw.example.id",
    "WALLET_KASPRO_CLIENT_ID": "prod-client",
    "WALLET_KASPRO_CLIENT_SECRET": "prod-client-secret",
    "WALLET_KASPRO_HMAC_KEY": "prod-key",
    "WALLET_KASPRO_HMAC_SECRET": "prod-hmac-secret",
    "WALLET_KASPRO_CALLBACK_SECRET": "prod-callback-secret",
    "WALLET_KASPRO_ESCROW_ACCOUNT": "888100000000001",
    "WALLET_KASPRO_MERCHANT_ACCOUNT": "888100000000002",
    "WALLET_KASPRO_CORPORATE_ACCOUNT": "888100000000003",
}


def test_certificate_callers_alone_are_enough_in_production(pki: Pki) -> None:
    config = load({**PRODUCTION_KASPRO, **tls_env(pki, mutual=True)})

    assert config.callers == {}
    assert config.tls is not None
    assert set(config.tls.client_callers) == {DISPATCH_CN, APP_CN}


def test_a_caller_name_has_one_set_of_roles(pki: Pki) -> None:
    # "dispatch" by token may dispatch; the same name by certificate may not be admin.
    env = tls_env(pki, mutual=True)
    env["WALLET_CALLER_TOKENS"] = "dispatch:dispatch:dispatch-token-1"
    env["WALLET_TLS_CLIENT_CALLERS"] = f"dispatch:admin:{DISPATCH_CN}"

    with pytest.raises(ConfigError, match="WALLET_TLS_CLIENT_CALLERS: caller dispatch has roles"):
        load(env)

"""Bearer tokens, TLS and mutual TLS against a real daemon on loopback."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Callable

import grpc
import pytest

from service._proto import mcil_pb2
from service.client import Client, TLSOptions

from .conftest import Running, examples, make_config, task_data

pytestmark = pytest.mark.integration

ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"


def _code(err: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return err.value.code()  # type: ignore[attr-defined,no-any-return]


def test_tokens(start_daemon: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin.token").write_text(ADMIN + "\n")
    monkeypatch.setenv("MCIL_TEST_READ_TOKEN", READER)
    d = start_daemon(make_config(tmp_path / "state", security__token_file=str(tmp_path / "admin.token"),
                                 security__read_token_env="MCIL_TEST_READ_TOKEN"))
    anonymous, reader = d.client, Client(d.target, token=READER)
    admin, wrong = Client(d.target, token=ADMIN), Client(d.target, token="not-the-token-at-all")
    data = examples(task_data(["red", "green"], per_class=5))

    # Read-only calls are open unless require_token_for_all; mutating calls need the admin token.
    assert anonymous.list_versions().current_version == 0
    for client, code in ((anonymous, grpc.StatusCode.UNAUTHENTICATED), (wrong, grpc.StatusCode.UNAUTHENTICATED),
                         (reader, grpc.StatusCode.PERMISSION_DENIED)):
        for call in (lambda c: c.learn(["red", "green"], data), lambda c: c.rollback(1),
                     lambda c: c.cancel_job("x")):
            with pytest.raises(grpc.RpcError) as err:
                call(client)
            assert _code(err) == code
            assert err.value.details() in ("authentication required", "permission denied")  # type: ignore[attr-defined]
    assert anonymous.list_versions().current_version == 0 and not anonymous.list_versions().versions
    job = admin.wait(admin.learn(["red", "green"], data).job_id)
    assert job.state == mcil_pb2.JOB_STATE_SUCCEEDED
    metrics = d.server.daemon.metrics["mcil_auth_failures_total"]
    counted = {s.labels["code"]: s.value for m in metrics.collect() for s in m.samples if s.name.endswith("_total")}
    assert counted == {"UNAUTHENTICATED": 6.0, "PERMISSION_DENIED": 3.0}
    for c in (reader, admin, wrong):
        c.close()


def test_token_for_all_calls(start_daemon: Callable[..., Running], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    monkeypatch.setenv("MCIL_TEST_TOKEN", ADMIN)
    d = start_daemon(make_config(tmp_path, security__token_env="MCIL_TEST_TOKEN",
                                 security__require_token_for_all="true"))
    with pytest.raises(grpc.RpcError) as err:
        d.client.list_classes()
    assert _code(err) == grpc.StatusCode.UNAUTHENTICATED
    with Client(d.target, token=ADMIN) as admin:
        assert admin.model_info().preset == "tiny"
    health = health_pb2_grpc.HealthStub(d.client.channel)  # probes stay open
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING


# -- TLS -----------------------------------------------------------------------------------------------


def _pki(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (directory / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write("ca", ca_key, ca)

    def leaf(stem: str, cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        write(stem, key, builder.sign(ca_key, hashes.SHA256()))

    leaf("server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaf("client", "operator", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return {p.stem + p.suffix: p for p in directory.iterdir()}


def _fails(client: Client) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        client.stub.ListClasses(mcil_pb2.ListClassesRequest(), timeout=5)
    client.close()
    return _code(err)


def test_tls_and_mutual_tls(start_daemon: Callable[..., Running], tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    files = _pki(pki)
    tls = start_daemon(make_config(tmp_path / "a", security__tls_cert=str(files["server.pem"]),
                                   security__tls_key=str(files["server.key"])))
    target = f"localhost:{tls.port}"
    with Client(target, tls=TLSOptions.from_files(files["ca.pem"])) as c:
        assert c.list_classes().model_version == 0
    assert _fails(Client(target)) == grpc.StatusCode.UNAVAILABLE  # plaintext client
    tls.server.stop(0.5)

    (tmp_path / "admin.token").write_text(ADMIN)
    mutual = start_daemon(make_config(tmp_path / "b", security__tls_cert=str(files["server.pem"]),
                                      security__tls_key=str(files["server.key"]),
                                      security__tls_client_ca=str(files["ca.pem"]),
                                      security__token_file=str(tmp_path / "admin.token")))
    target = f"localhost:{mutual.port}"
    with Client(target, tls=TLSOptions.from_files(files["ca.pem"], files["client.pem"], files["client.key"])) as c:
        assert c.list_classes().model_version == 0
    assert _fails(Client(target, tls=TLSOptions.from_files(files["ca.pem"]))) == grpc.StatusCode.UNAVAILABLE

    # The CLI with mutual TLS and a token file: a mutating call goes through, without the token it does not.
    from service.cli import main

    tls_args = ["--target", target, "--ca", str(files["ca.pem"]), "--cert", str(files["client.pem"]),
                "--key", str(files["client.key"])]
    assert main([*tls_args, "--token-file", str(tmp_path / "admin.token"), "rollback", "0"]) == 0
    assert main([*tls_args, "rollback", "0"]) == 1

"""TLS on the DICOM, MLLP and HTTP listeners of the whole bridge, on both databases, with
real clients: DCMTK ``storescu +tls`` and ``findscu +tls``, ``openssl s_client`` and the
bridge's own MLLP client, and httpx. Client certificates are checked against the hospital's
CA, and a DICOM peer's ``tls_subject`` ties its AE title to its certificate."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from typer.testing import CliRunner

from bridge.app.runtime import Bridge
from bridge.cli.main import app
from bridge.clients.mllp import MLLPClient, ack_code
from bridge.config.settings import ConfigError, DicomPeer, Settings, load_settings
from bridge.store.archive_models import Instance
from bridge.store.models import HL7Message
from tests.conftest import hl7_fixture, missing_peer, require_tool
from tests.dicom_factories import write_series
from tests.hl7_harness import running_bridge
from tests.tls_certificates import Authority, Pair, make_authority

pytestmark = pytest.mark.integration
ROOT = "1.2.826.0.1.3680043.10.1137.88"


@dataclass
class TlsBridge:
    bridge: Bridge
    ca: Authority
    modality: Pair  # the client certificate of CT_TLS (its tls_subject)
    stranger: Pair  # a certificate from the same CA with another name


def tls_settings(tmp_path: Path, database_url: str, ca: Authority, server: Pair, *,
                 client_certificates: str = "optional") -> Settings:
    return load_settings(
        data_dir=tmp_path / "var", database_url=database_url, mllp_port=0, dicom_port=0,
        http_port=0, dicom_tls=True, mllp_tls=True, http_tls=True,
        tls_certificate=server.certificate, tls_private_key=server.key,
        tls_client_certificates=client_certificates, tls_client_ca=ca.certificate,
        tls_handshake_seconds=2.0,
        dicom_peers=(DicomPeer(ae_title="CT_TLS", tls_subject="ct-scanner-1.hospital"),))


@pytest.fixture
def tls(tmp_path: Path, database_url: str) -> Iterator[TlsBridge]:
    ca = make_authority(tmp_path / "pki")
    server = ca.issue("bridge.hospital", server=True)
    settings = tls_settings(tmp_path, database_url, ca, server)
    with running_bridge(settings) as bridge:
        yield TlsBridge(bridge, ca, ca.issue("ct-scanner-1.hospital"),
                        ca.issue("somebody-else"))


def storescu(tls: TlsBridge, files: list[Path], *, calling_ae: str, client: Pair | None,
             plain: bool = False) -> subprocess.CompletedProcess[str]:
    security = [] if plain else (
        ["+tls", str(client.key), str(client.certificate)] if client is not None
        else ["+tla"]) + ["+cf", str(tls.ca.certificate)]
    return subprocess.run(
        [require_tool("storescu"), *security, "-aet", calling_ae, "-aec", "BRIDGE",
         "127.0.0.1", str(tls.bridge.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=60, check=False)


def test_dicom_over_tls_with_the_peers_certificate(tls: TlsBridge, tmp_path: Path) -> None:
    study_uid = generate_uid(prefix=f"{ROOT}.")
    files = write_series(tmp_path / "out", 2, study_uid=study_uid)
    # A client that connects and never starts its handshake holds up nobody else.
    with socket.create_connection(("127.0.0.1", tls.bridge.dicom_port)) as stalled:
        sent = storescu(tls, files, calling_ae="CT_TLS", client=tls.modality)
        assert sent.returncode == 0, sent.stderr
        stalled.settimeout(10)
        assert stalled.recv(1) == b""  # closed once its handshake time ran out
    assert _count(tls, files) == 2


def test_dicom_refuses_the_wrong_certificate_no_certificate_and_plain_tcp(
        tls: TlsBridge, tmp_path: Path) -> None:
    files = write_series(tmp_path / "out", 1, study_uid=generate_uid(prefix=f"{ROOT}."))
    wrong = storescu(tls, files, calling_ae="CT_TLS", client=tls.stranger)
    anonymous = storescu(tls, files, calling_ae="CT_TLS", client=None)
    plain = storescu(tls, files, calling_ae="CT_TLS", client=None, plain=True)
    assert wrong.returncode != 0 and "Association Rejected" in wrong.stderr, wrong.stderr
    assert anonymous.returncode != 0 and "Association Rejected" in anonymous.stderr
    assert plain.returncode != 0
    # Another AE title, with no tls_subject configured, needs no certificate of its own.
    other = storescu(tls, files, calling_ae="US_ROOM_2", client=tls.stranger)
    assert other.returncode == 0, other.stderr
    assert _count(tls, files) == 1


def test_the_worklist_over_tls_after_an_order_over_mllp_tls(tls: TlsBridge,
                                                            tmp_path: Path) -> None:
    context = ssl.create_default_context(cafile=str(tls.ca.certificate))
    with MLLPClient("127.0.0.1", tls.bridge.mllp_port, tls=context) as mllp:
        assert ack_code(mllp.send(hl7_fixture("orm_o01_nw.hl7"))) == "AA"
    out = tmp_path / "worklist"
    out.mkdir()
    found = subprocess.run(
        [require_tool("findscu"), "+tls", str(tls.modality.key), str(tls.modality.certificate),
         "+cf", str(tls.ca.certificate), "-W", "-X", "-od", str(out), "-aet", "CT_TLS",
         "-aec", "BRIDGE", "-k", "AccessionNumber=ACC1001", "-k", "PatientName",
         "127.0.0.1", str(tls.bridge.dicom_port)],
        capture_output=True, text=True, timeout=60, check=False)
    assert found.returncode == 0, found.stderr
    assert len(list(out.iterdir())) == 1


def test_bridge_hl7_send_over_tls(tls: TlsBridge, tmp_path: Path) -> None:
    message = tmp_path / "orm.hl7"
    message.write_bytes(hl7_fixture("orm_o01_nw.hl7").replace(b"ORM0001", b"ORM-TLS-CLI"))
    result = CliRunner().invoke(app, [
        "hl7", "send", str(message), "--port", str(tls.bridge.mllp_port),
        "--tls-ca", str(tls.ca.certificate), "--tls-certificate",
        str(tls.modality.certificate), "--tls-key", str(tls.modality.key)])
    assert result.exit_code == 0, result.output
    assert "MSA|AA|ORM-TLS-CLI" in result.output


def test_mllp_over_tls_with_openssl_s_client(tls: TlsBridge) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_peer("openssl not installed")
    assert openssl is not None
    message = hl7_fixture("orm_o01_nw.hl7").replace(b"ORM0001", b"ORM-TLS-2")
    client = subprocess.Popen(
        [openssl, "s_client", "-connect", f"127.0.0.1:{tls.bridge.mllp_port}", "-CAfile",
         str(tls.ca.certificate), "-verify_return_error", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"\x0b" + message + b"\x1c\r")
        client.stdin.flush()
        answer = b""
        while b"\x1c\r" not in answer:  # s_client writes what it decrypts as it comes
            chunk = client.stdout.read1(65536)
            assert chunk, "openssl s_client ended without an ACK"
            answer += chunk
    finally:
        client.kill()
        client.wait(10)
    assert b"MSA|AA|ORM-TLS-2" in answer
    # Plain MLLP on the TLS port gets no ACK (the bytes are not a TLS handshake): the
    # connection is closed, and nothing was taken.
    with MLLPClient("127.0.0.1", tls.bridge.mllp_port, timeout=5) as plain:
        plain.send_raw(b"\x0b" + message.replace(b"ORM-TLS-2", b"ORM-PLAIN") + b"\x1c\r")
        with pytest.raises(ConnectionError):
            plain.read_optional(3.0)
    with tls.bridge.sessions() as session:
        assert session.scalar(select(func.count()).select_from(HL7Message).where(
            HL7Message.control_id == "ORM-PLAIN")) == 0


def test_http_over_tls_and_the_console_cookie_is_secure(tls: TlsBridge) -> None:
    base = f"https://127.0.0.1:{tls.bridge.http_port}"
    with httpx.Client(base_url=base, verify=str(tls.ca.certificate), timeout=30) as client:
        assert client.get("/health").status_code == 200
        login = client.get("/console/login")
        assert login.status_code == 200
        assert "secure" in login.headers["set-cookie"].lower()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls.bridge.http_port}/health", timeout=5)


def test_required_client_certificates_refuse_a_client_without_one(
        tmp_path: Path, database_url: str) -> None:
    ca = make_authority(tmp_path / "pki")
    settings = tls_settings(tmp_path, database_url, ca, ca.issue("bridge.hospital",
                                                                 server=True),
                            client_certificates="required")
    client = ca.issue("ct-scanner-1.hospital")
    with running_bridge(settings) as bridge:
        tls = TlsBridge(bridge, ca, client, client)
        base = f"https://127.0.0.1:{bridge.http_port}"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{base}/health", verify=str(ca.certificate), timeout=10)
        identified = ssl.create_default_context(cafile=str(ca.certificate))
        identified.load_cert_chain(str(client.certificate), str(client.key))
        assert httpx.get(f"{base}/health", verify=identified, timeout=10).status_code == 200
        files = write_series(tmp_path / "out", 1, study_uid=generate_uid(prefix=f"{ROOT}."))
        assert storescu(tls, files, calling_ae="US_ROOM_2", client=None).returncode != 0
        assert storescu(tls, files, calling_ae="CT_TLS", client=client).returncode == 0


def test_tls_settings_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BRIDGE_TLS_CERTIFICATE"):
        load_settings(data_dir=tmp_path, dicom_tls=True)
    ca = make_authority(tmp_path / "pki")
    server = ca.issue("bridge.hospital", server=True)
    with pytest.raises(ConfigError, match="BRIDGE_TLS_CLIENT_CA"):
        load_settings(data_dir=tmp_path, http_tls=True, tls_certificate=server.certificate,
                      tls_private_key=server.key, tls_client_certificates="required")


def _sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _count(tls: TlsBridge, files: list[Path]) -> int:
    with tls.bridge.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Instance).where(
            Instance.sop_instance_uid.in_([_sop_uid(f) for f in files]))) or 0)

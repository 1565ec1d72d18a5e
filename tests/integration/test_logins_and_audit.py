"""Clinicians' logins (passwords, OIDC), the directory and the hash-chained audit trail,
over real sockets on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bridge.adapters.http.app import create_app
from bridge.cli.main import app as cli_app
from bridge.config.settings import Settings
from bridge.services.auth.users import create_organization, create_user
from bridge.store.archive_models import AuditRecord
from bridge.store.audit import append_audit, search_audit, verify_chain
from bridge.store.models import utcnow
from bridge.store.people_models import LoginSession, User
from tests.http_harness import Api, running_api

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return create_app(settings, session_factory, metrics_registry=CollectorRegistry())


@pytest.fixture
def api(app: FastAPI, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    with session_factory() as session, session.begin():
        create_organization(session, identifier="PR-1", name="Family practice 1",
                            kind="practice")
        create_user(session, username="gp", role="family_doctor", password=PASSWORD,
                    organization="PR-1")
    with running_api(app, session_factory) as served:
        yield served


def _login(api: Api, username: str = "gp", password: str = PASSWORD) -> tuple[int, dict]:
    with api.client() as client:
        response = client.post("/api/login", json={"username": username, "password": password})
    return response.status_code, response.json()


def test_a_clinician_logs_in_and_the_session_token_opens_the_api(api: Api) -> None:
    status, body = _login(api)
    assert status == 200 and body["role"] == "family_doctor"
    assert body["access_token"].startswith("brs_") and body["expires_in"] == 8 * 3600
    with api.client(token=body["access_token"]) as client:
        assert client.get("/api/worklist").status_code == 200
        # A clinician is not an admin: the directory is not theirs to change.
        assert client.get("/api/users").status_code == 403
        assert client.post("/api/logout").status_code == 204
        assert client.get("/api/worklist").status_code == 401
    with api.session_factory() as session:
        stored = session.execute(select(LoginSession.token_hash)).scalars().all()
        assert body["access_token"] not in stored  # only the hash is kept


@pytest.mark.parametrize(("username", "password"), [
    ("gp", "wrong password!!"), ("nobody", PASSWORD)])
def test_a_wrong_login_gets_one_answer_and_an_audit_record(api: Api, username: str,
                                                            password: str) -> None:
    status, body = _login(api, username, password)
    assert status == 401 and body["detail"] == "wrong username or password"
    with api.session_factory() as session:
        record = search_audit(session, action="login")[0]
        assert (record.outcome, record.entity_id) == ("failure", username)
        assert PASSWORD not in json.dumps(record.details)


def test_too_many_failures_lock_the_username_even_for_the_right_password(api: Api) -> None:
    for _ in range(5):
        assert _login(api, "gp", "wrong password!!")[0] == 401
    assert _login(api, "gp", PASSWORD)[0] == 429
    assert _login(api, "someone-else", PASSWORD)[0] == 401  # other usernames are not locked


def test_disabled_users_and_expired_sessions_are_refused(api: Api) -> None:
    token = _login(api)[1]["access_token"]
    with api.session_factory() as session, session.begin():
        session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    with api.client(token=token) as client:
        assert client.get("/api/worklist").status_code == 401
    token = _login(api)[1]["access_token"]
    with api.client("admin") as admin:
        assert admin.post("/api/users/gp/disable").json()["disabled"] is True
    with api.client(token=token) as client:
        assert client.get("/api/worklist").status_code == 401
    assert _login(api)[0] == 401


def test_admins_manage_the_directory_and_bad_input_is_refused(api: Api) -> None:
    with api.client("admin") as admin:
        created = admin.post("/api/organizations", json={
            "identifier": "DX-1", "name": "Diagnostics", "kind": "diagnostics"})
        assert created.status_code == 201
        user = admin.post("/api/users", json={
            "username": "rad", "role": "diagnostics", "password": PASSWORD,
            "organization": "DX-1"})
        assert user.status_code == 201 and user.json()["organization_id"] == created.json()["id"]
        assert admin.post("/api/users", json={"username": "rad", "role": "diagnostics",
                                              "password": PASSWORD}).status_code == 409
        assert admin.post("/api/users", json={"username": "x", "role": "root",
                                              "password": PASSWORD}).status_code == 422
        assert admin.post("/api/users", json={"username": "y", "role": "consultant",
                                              "password": PASSWORD,
                                              "organization": "NOPE"}).status_code == 404
        assert {u["username"] for u in admin.get("/api/users").json()} == {"gp", "rad"}
    with api.client("integration") as system:
        assert system.get("/api/users").status_code == 403


def test_the_cli_manages_users(settings: Settings, session_factory: sessionmaker[Session],
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    made = runner.invoke(cli_app, ["user", "create", "ops", "--role", "operator",
                                   "--password-stdin"], input=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    assert runner.invoke(cli_app, ["user", "create", "ops", "--role", "operator",
                                   "--password-stdin"], input=PASSWORD + "\n").exit_code == 2
    listed = runner.invoke(cli_app, ["user", "list"])
    assert "\tops\toperator\t" in listed.output and "active" in listed.output
    assert runner.invoke(cli_app, ["user", "disable", "ops"]).exit_code == 0
    assert "disabled" in runner.invoke(cli_app, ["user", "list"]).output
    with session_factory() as session:
        user = session.execute(select(User).where(User.username == "ops")).scalar_one()
        assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    verified = runner.invoke(cli_app, ["audit", "verify"])
    assert verified.exit_code == 0 and "2 records" in verified.output, verified.output


# ----------------------------------------------------------------------------- the chain

def _chain_of(session_factory: sessionmaker[Session], count: int) -> None:
    with session_factory() as session, session.begin():
        for n in range(count):
            append_audit(session, actor="Practitioner/1", action="read", entity="study",
                         entity_id=f"1.2.3.{n}", patient_ref="MIS|P1", details={"n": n})


def test_the_chain_holds_and_detects_an_edited_record(
        session_factory: sessionmaker[Session]) -> None:
    _chain_of(session_factory, 10)
    with session_factory() as session:
        report = verify_chain(session, batch=3)
        assert (report.checked, report.head_seq, report.broken) == (10, 10, None)
    with session_factory() as session, session.begin():
        session.execute(update(AuditRecord).where(AuditRecord.seq == 4)
                        .values(actor="Practitioner/2"))
    with session_factory() as session:
        broken = verify_chain(session).broken
        assert broken is not None and broken.seq == 4 and "edited" in broken.reason


def test_the_chain_detects_a_removed_record(session_factory: sessionmaker[Session],
                                           settings: Settings, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _chain_of(session_factory, 6)
    with session_factory() as session, session.begin():
        session.execute(text("DELETE FROM audit_log WHERE seq = 3"))
    with session_factory() as session:
        broken = verify_chain(session).broken
        assert broken is not None and broken.seq == 3 and "removed" in broken.reason
    monkeypatch.setenv("BRIDGE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(cli_app, ["audit", "verify"])
    assert result.exit_code == 1 and "BROKEN at seq 3" in result.output


def test_a_rebuilt_chain_without_the_key_is_detected(
        session_factory: sessionmaker[Session]) -> None:
    from bridge.store import audit
    audit.set_chain_key(b"kept at home")
    try:
        _chain_of(session_factory, 3)
        with session_factory() as session:
            assert verify_chain(session).broken is None
        audit.set_chain_key(None)  # somebody with the database but not the key
        with session_factory() as session:
            broken = verify_chain(session).broken
            assert broken is not None and broken.seq == 1
    finally:
        audit.set_chain_key(None)


def test_concurrent_appends_make_one_line(session_factory: sessionmaker[Session]) -> None:
    def append_many() -> None:
        _chain_of(session_factory, 1)
        for _ in range(9):
            _chain_of(session_factory, 1)

    threads = [threading.Thread(target=append_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with session_factory() as session:
        report = verify_chain(session)
        assert (report.checked, report.broken) == (40, None)


# ------------------------------------------------------------------------------- OIDC

class _Jwks:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.body = json.dumps({"keys": [{**public, "kid": "k1", "use": "sig",
                                          "alg": "RS256"}]}).encode()

    def token(self, **claims: object) -> str:
        now = int(time.time())
        payload = {"iss": "https://idp.test", "aud": "bridge", "sub": "idp-user-1",
                   "iat": now, "exp": now + 300, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def jwks() -> Iterator[tuple[_Jwks, str]]:
    keys = _Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(keys.body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield keys, f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()


def test_an_oidc_token_is_checked_against_the_providers_jwks(
        settings: Settings, session_factory: sessionmaker[Session],
        jwks: tuple[_Jwks, str]) -> None:
    keys, url = jwks
    configured = settings.model_copy(update={
        "oidc_issuer": "https://idp.test", "oidc_audience": "bridge", "oidc_jwks_url": url})
    app = create_app(configured, session_factory, metrics_registry=CollectorRegistry())
    with session_factory() as session, session.begin():
        create_user(session, username="consultant", role="consultant",
                    oidc_subject="idp-user-1")
    forged = jwt.encode({"iss": "https://idp.test", "aud": "bridge", "sub": "idp-user-1",
                         "exp": int(time.time()) + 300}, "a shared secret", algorithm="HS256")
    with running_api(app, session_factory) as api:
        for token, expected in [
            (keys.token(), 200),
            (keys.token(aud="another-app"), 401),
            (keys.token(iss="https://evil.test"), 401),
            (keys.token(exp=int(time.time()) - 3600), 401),
            (keys.token(sub="not-in-the-directory"), 401),
            (forged, 401),
        ]:
            with api.client(token=token) as client:
                assert client.get("/api/worklist").status_code == expected, token


# ----------------------------------------------------------------- AuditEvent and syslog

def test_the_trail_is_served_as_audit_events(api: Api, settings: Settings) -> None:
    from bridge.mapping.fhir.version import check_resource
    _login(api, "gp", "wrong password!!")
    _login(api)
    with api.client("admin") as auditor:
        found = auditor.get("/fhir/AuditEvent", params={"action": "login"}).json()
        assert found["total"] == 2
        events = [entry["resource"] for entry in found["entry"]]
        for event in events:
            check_resource(settings.fhir_version, event, expected_type="AuditEvent")
        assert {e["outcome"] for e in events} == {"0", "4"}  # one success, one failure
        one = auditor.get(f"/fhir/AuditEvent/{events[0]['id']}").json()
        assert one["id"] == events[0]["id"]
        failed = auditor.get("/fhir/AuditEvent", params={"outcome": "4"}).json()
        assert failed["total"] == 1


def _certificate(folder: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "repo.pem", folder / "repo.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_records_reach_a_tls_syslog_repository_and_wait_while_it_is_down(
        session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    import socket
    import ssl

    from bridge.clients.syslog import SyslogSender
    from bridge.services.audit.forwarder import AuditForwarder
    from tests.conftest import free_port
    _chain_of(session_factory, 3)
    port = free_port()
    cert, key = _certificate(tmp_path)
    forwarder = AuditForwarder(session_factory, SyslogSender(f"tls://localhost:{port}",
                                                             ca_file=str(cert)))
    with pytest.raises(OSError):
        forwarder.run_once()  # the repository is down: nothing is marked as sent
    received: list[bytes] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", port))

    def accept() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            buffer = b""
            while len(received) < 4:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if len(rest) < int(length):
                        break
                    received.append(rest[:int(length)])
                    buffer = rest[int(length):]

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    assert forwarder.run_once() == 3
    assert forwarder.run_once() == 0  # the watermark moved: nothing twice
    _chain_of(session_factory, 1)
    assert forwarder.run_once() == 1
    thread.join(10)
    listener.close()
    assert len(received) == 4
    first = received[0]
    assert first.startswith(b"<85>1 ") and b'[bridge@32473 seq="1"]' in first
    event = json.loads(first.split(b"\xef\xbb\xbf", 1)[1])
    assert event["resourceType"] == "AuditEvent" and event["entity"][0]["what"] == {
        "reference": "MIS|P1"}

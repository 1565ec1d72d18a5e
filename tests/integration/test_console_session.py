"""The console's log-in and its defences, over a real socket on both databases: the session
cookie (HttpOnly, SameSite=Strict, Secure on HTTPS), CSRF on everything that changes something
(the log-in included), the security headers of every page and file, and log-out."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.adapters.http.console.headers import CONTENT_SECURITY_POLICY
from bridge.config.settings import Settings
from bridge.store.archive_models import AuditRecord
from tests.console_harness import console_client, csrf_of
from tests.http_harness import Api, running_api
from tests.referral_harness import PASSWORD, make_directory

pytestmark = pytest.mark.integration
ORDER = {"accession": "ACC-CON-1", "patient": {"identifiers": [{"value": "MRN-CON-1"}],
                                               "name": "Test^Console"},
         "steps": [{"modality": "CT", "station_ae": "CT1", "start_date": "20261207"}]}


@pytest.fixture
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    make_directory(session_factory)
    app: FastAPI = create_app(settings, session_factory, metrics_registry=CollectorRegistry())
    with running_api(app, session_factory) as served:
        yield served


def _cookie_header(response: httpx.Response, name: str) -> str:
    found = [v for k, v in response.headers.multi_items()
             if k == "set-cookie" and v.startswith(f"{name}=") and "max-age=0" not in v.lower()]
    assert found, f"no {name} cookie set"
    return found[-1]


def test_log_in_sets_an_httponly_strict_cookie_and_a_bound_csrf_token(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        page = client.get("/console/login")
        pre = client.cookies.get("bridge_csrf", path="/console")
        assert page.status_code == 200 and pre
        answer = client.post("/console/session", json={"username": "ops", "password": PASSWORD},
                             headers={"X-CSRF-Token": pre})
        assert answer.status_code == 200, answer.text
        assert answer.json()["role"] == "operator"
        session_cookie = _cookie_header(answer, "bridge_session").lower()
        assert "httponly" in session_cookie and "samesite=strict" in session_cookie
        assert "secure" not in session_cookie  # plain HTTP here
        csrf_cookie = _cookie_header(answer, "bridge_csrf").lower()
        assert "httponly" not in csrf_cookie and "samesite=strict" in csrf_cookie
        assert client.get("/console/session").json()["practitioner"].startswith("Practitioner/")
        assert client.get("/api/worklist").status_code == 200  # the cookie opens the API


def test_the_cookie_is_secure_behind_https(api: Api) -> None:
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1, as from a TLS-terminating proxy.
    with httpx.Client(base_url=api.url, timeout=30,
                      headers={"X-Forwarded-Proto": "https"}) as client:
        page = client.get("/console/login")
        assert "secure" in _cookie_header(page, "bridge_csrf").lower()
        # httpx keeps Secure cookies off plain HTTP: send it as the browser would over TLS.
        pre = page.cookies["bridge_csrf"]
        answer = client.post("/console/session", json={"username": "ops", "password": PASSWORD},
                             headers={"X-CSRF-Token": pre, "Cookie": f"bridge_csrf={pre}"})
        assert answer.status_code == 200, answer.text
        assert "secure" in _cookie_header(answer, "bridge_session").lower()
        assert "secure" in _cookie_header(answer, "bridge_csrf").lower()


def test_a_log_in_without_its_csrf_cookie_is_refused(api: Api,
                                                      session_factory: sessionmaker) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        no_page = client.post("/console/session", json={"username": "ops", "password": PASSWORD},
                              headers={"X-CSRF-Token": "forged"})
        assert no_page.status_code == 403
        client.get("/console/login")
        forged = client.post("/console/session", json={"username": "ops", "password": PASSWORD},
                             headers={"X-CSRF-Token": "forged"})
        assert forged.status_code == 403
        assert "bridge_session" not in client.cookies
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(AuditRecord).where(
            AuditRecord.action == "login")).scalar_one() == 0  # not even tried


def test_wrong_passwords_and_empty_forms_say_so_and_set_nothing(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        client.get("/console/login")
        csrf = {"X-CSRF-Token": client.cookies.get("bridge_csrf") or ""}
        wrong = client.post("/console/session", json={"username": "ops", "password": "nope"},
                            headers=csrf)
        empty = client.post("/console/session", json={"username": "ops"}, headers=csrf)
        bad_token = client.post("/console/session", json={"token": "brg_nothing"}, headers=csrf)
        assert (wrong.status_code, empty.status_code, bad_token.status_code) == (401, 400, 401)
        assert wrong.json()["detail"] == "wrong username or password"
        assert "bridge_session" not in client.cookies


def test_what_changes_something_needs_the_csrf_header_of_this_login(api: Api) -> None:
    with console_client(api.url, "ops") as ops, console_client(api.url, "ops") as other:
        assert ops.post("/api/worklist", json=ORDER).status_code == 403
        assert ops.post("/api/worklist", json=ORDER,
                        headers=csrf_of(other)).status_code == 403  # another login's token
        created = ops.post("/api/worklist", json=ORDER, headers=csrf_of(ops))
        assert created.status_code == 201, created.text
        # A bearer token is not a cookie: no CSRF header is needed (nor possible to forge).
        with api.client("integration") as system:
            assert system.get(f"/api/worklist/{created.json()['id']}").status_code == 200


def test_an_api_token_logs_in_and_log_out_ends_the_login(api: Api) -> None:
    with console_client(api.url, token=api.tokens["admin"]) as admin:
        assert admin.get("/console/session").json()["kind"] == "token"
        assert admin.get("/api/jobs").status_code == 200
    with console_client(api.url, "gp") as gp:
        kept = gp.cookies.get("bridge_session")
        assert gp.post("/console/logout").status_code == 403  # CSRF applies to log-out too
        assert gp.post("/console/logout", headers=csrf_of(gp)).status_code == 204
        assert "bridge_session" not in gp.cookies
        with httpx.Client(base_url=api.url, cookies={"bridge_session": kept or ""}) as replay:
            assert replay.get("/console/session").status_code == 401  # revoked, not just forgotten


def test_every_page_and_file_leaves_with_the_security_headers(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for path in ("/console/", "/console/login", "/console/view",
                     "/console/static/js/app.js", "/console/static/css/console.css"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"] == "no-referrer"
        assert client.get("/console/").headers["cache-control"] == "no-store"
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert client.get("/console", follow_redirects=False).headers["location"] == "/console/"
        assert client.get("/console/static/js/nothing.js").status_code == 404

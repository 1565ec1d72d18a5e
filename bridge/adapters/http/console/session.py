"""The console's log-in: ``POST /console/session`` takes a username and password (a clinician,
an operator, an admin: the API's users) or an API token, and answers with two cookies:

- ``bridge_session``: the credential itself (a ``brs_`` login or the token), HttpOnly so no
  script can read it, SameSite=Strict so no other site's page sends it, Secure on HTTPS;
- ``bridge_csrf``: its CSRF token (:func:`bridge.mapping.links.signing.csrf_token`), readable
  by the console's script, which sends it in ``X-CSRF-Token`` with everything that changes
  something (checked in :func:`bridge.adapters.http.deps.get_principal`).

The log-in itself is protected by a pre-login CSRF cookie that the log-in page sets and its
script echoes (a forged log-in from another site cannot read it). ``GET /console/session``
says who is logged in; ``POST /console/logout`` ends the login.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from bridge.adapters.http.deps import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    ContextDep,
    CurrentPrincipal,
    SessionDep,
)
from bridge.adapters.http.login import password_login
from bridge.mapping.links.signing import csrf_token
from bridge.services.auth import users
from bridge.services.auth.principal import Principal
from bridge.services.auth.tokens import TOKEN_PREFIX, authenticate
from bridge.services.links.secret import console_secret
from bridge.store.audit import append_audit

router = APIRouter(prefix="/console", include_in_schema=False)


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(default="", max_length=64)
    password: str = Field(default="", max_length=1024)
    token: str = Field(default="", max_length=256)


class WhoOut(BaseModel):
    name: str
    role: str
    level: str
    kind: str
    clinician: bool
    #: ``Practitioner/N`` of a user (how referrals name their requester and owner).
    practitioner: str | None = None


def _who(principal: Principal) -> WhoOut:
    return WhoOut(name=principal.name, role=principal.role, level=principal.level,
                  kind=principal.kind, clinician=principal.is_clinician,
                  practitioner=principal.actor if principal.kind == "user" else None)


def pre_login_cookie(request: Request, response: Response) -> None:
    """The log-in page's CSRF cookie (kept when the browser has one)."""
    if not request.cookies.get(CSRF_COOKIE):
        response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), httponly=False,
                            samesite="strict", secure=_secure(request), path="/console")


@router.post("/session", response_model=WhoOut)
def log_in(body: LoginIn, request: Request, response: Response, context: ContextDep,
           session: SessionDep) -> WhoOut:
    echoed = request.headers.get(CSRF_HEADER, "")
    if not echoed or not hmac.compare_digest(echoed, request.cookies.get(CSRF_COOKIE, "")):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "missing or wrong CSRF token: reload the log-in page")
    settings = context.settings
    source = request.client.host if request.client else ""
    if body.token:
        credential, who, seconds = _token_login(session, body.token, source)
    elif body.username and body.password:
        result = password_login(session, settings, username=body.username,
                                password=body.password, source=source)
        credential, seconds = result.token, result.expires_in
        who = _who(result.principal)
    else:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            "enter a username and password, or an API token")
    session.commit()
    _set_login_cookies(request, response, credential, console_secret(settings), int(seconds))
    return who


def _token_login(session: SessionDep, token: str, source: str) -> tuple[str, WhoOut, float]:
    found = authenticate(session, token) if token.startswith(TOKEN_PREFIX) else None
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown, expired or revoked token")
    append_audit(session, actor=found.name or f"token {found.id}", action="login",
                 entity="login", entity_id=f"token {found.id}",
                 details={"source": source, "via": "console"})
    who = WhoOut(name=found.name or f"token {found.id}", role=found.role, level=found.role,
                 kind="token", clinician=False)
    return token, who, 12 * 3600.0


def _set_login_cookies(request: Request, response: Response, credential: str, secret: bytes,
                       seconds: int) -> None:
    secure = _secure(request)
    response.set_cookie(SESSION_COOKIE, credential, max_age=seconds, httponly=True,
                        samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf_token(secret, credential), max_age=seconds,
                        httponly=False, samesite="strict", secure=secure, path="/")
    # The pre-login cookie (path /console) would shadow the new one for console pages.
    response.delete_cookie(CSRF_COOKIE, path="/console", samesite="strict")


@router.get("/session", response_model=WhoOut)
def who_am_i(principal: CurrentPrincipal) -> WhoOut:
    return _who(principal)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def log_out(request: Request, response: Response, principal: CurrentPrincipal,
            session: SessionDep) -> None:
    credential = request.cookies.get(SESSION_COOKIE, "")
    if principal.kind == "user" and credential.startswith(users.SESSION_PREFIX):
        users.logout(session, credential)
        session.commit()
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"

"""A password log-in as the HTTP routes answer it, shared by ``POST /api/login`` (a bearer
token for clients) and ``POST /console/session`` (the console's cookie): the lockout policy
from the settings, and each refusal audited (committed) before it is answered."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from bridge.config.settings import Settings
from bridge.services.auth import users


def password_login(session: Session, settings: Settings, *, username: str, password: str,
                   source: str) -> users.LoginResult:
    """The login, or 429 (locked out for a while) / 401 (wrong username or password: the
    same answer for both, so names cannot be probed)."""
    try:
        return users.login(session, username, password,
                           session_seconds=settings.login_session_seconds,
                           max_failures=settings.login_max_failures,
                           lockout_seconds=settings.login_lockout_seconds, source=source)
    except users.LoginLocked:
        session.commit()  # the refused attempt is audited
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            "too many failed log-ins; try again later") from None
    except users.LoginRefused:
        session.commit()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password",
                            headers={"WWW-Authenticate": "Bearer"}) from None

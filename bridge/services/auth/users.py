"""Clinicians and operators: create, list, disable; passwords; login sessions.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended
set). A login returns a ``brs_`` token that lives ``login_session_seconds``; like API tokens
only its SHA-256 is kept. Every login, failed or not, is an audit record, and too many
failures for one username within the lock-out window refuse further tries (429) without
checking the password, so the window cannot be used to guess it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.errors import Conflict, MappingFailed, NotFound
from bridge.services.auth.principal import USER_ROLES, Principal, user_principal
from bridge.services.auth.tokens import MAX_TOKEN_LENGTH, hash_token
from bridge.store.archive_models import AuditRecord
from bridge.store.audit import append_audit
from bridge.store.models import utcnow
from bridge.store.people_models import LoginSession, Organization, User

SESSION_PREFIX: Final = "brs_"
MIN_PASSWORD_LENGTH: Final = 12
_hasher = PasswordHasher()
#: Verified against when the username is unknown, so both answers take as long.
_DUMMY_HASH: Final = _hasher.hash("not a password of anybody")


class LoginRefused(Exception):
    """Wrong username or password, or a disabled user (the caller cannot tell which)."""


class LoginLocked(Exception):
    """Too many failed logins for this username recently."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    expires_in: int
    principal: Principal


def create_user(session: Session, *, username: str, role: str, password: str | None = None,
                display_name: str = "", organization: str | None = None,
                specialty: str | None = None, identifier: str | None = None,
                oidc_subject: str | None = None, actor: str = "cli") -> User:
    """Add a user; ``organization`` is an Organization identifier from the directory."""
    if role not in USER_ROLES:
        raise MappingFailed(f"unknown role {role!r}; expected one of {', '.join(USER_ROLES)}",
                            location="role")
    if not username or len(username) > 64:
        raise MappingFailed("a username of 1 to 64 characters is needed", location="username")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise MappingFailed(f"a password needs at least {MIN_PASSWORD_LENGTH} characters",
                            location="password")
    if session.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"user {username!r} exists", location="username")
    org_id = None
    if organization:
        org_id = session.execute(select(Organization.id).where(
            Organization.identifier == organization)).scalar_one_or_none()
        if org_id is None:
            raise NotFound(f"no organization {organization!r} in the directory",
                           location="organization")
    user = User(username=username, role=role, display_name=display_name,
                organization_id=org_id, specialty=specialty, identifier=identifier,
                oidc_subject=oidc_subject,
                password_hash=_hasher.hash(password) if password else None, disabled=False)
    session.add(user)
    session.flush()
    append_audit(session, actor=actor, action="user_create", entity="user",
                 entity_id=str(user.id), details={"role": role})
    return user


def create_organization(session: Session, *, identifier: str, name: str, kind: str,
                        actor: str = "cli") -> Organization:
    if kind not in ("practice", "diagnostics", "consultants", "hospital"):
        raise MappingFailed("kind is practice, diagnostics, consultants or hospital",
                            location="kind")
    if session.execute(select(Organization.id).where(
            Organization.identifier == identifier)).first():
        raise Conflict(f"organization {identifier!r} exists", location="identifier")
    org = Organization(identifier=identifier, name=name, kind=kind, active=True)
    session.add(org)
    session.flush()
    append_audit(session, actor=actor, action="org_create", entity="organization",
                 entity_id=str(org.id), details={"kind": kind})
    return org


def set_disabled(session: Session, username: str, disabled: bool, *, actor: str) -> User:
    """Disable (or enable) a user; a disabled user's sessions end at once."""
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}", location="username")
    user.disabled = disabled
    if disabled:
        for login in session.execute(select(LoginSession).where(
                LoginSession.user_id == user.id, LoginSession.revoked.is_(False))).scalars():
            login.revoked = True
    append_audit(session, actor=actor, action="user_disable" if disabled else "user_enable",
                 entity="user", entity_id=str(user.id))
    session.flush()
    return user


def active_user(session: Session, ref: str, *, location: str) -> User:
    """The active user ``ref`` names (a username or ``Practitioner/N``); NotFound otherwise."""
    query = select(User)
    if ref.startswith("Practitioner/") and ref[13:].isdigit() and len(ref) < 32:
        query = query.where(User.id == int(ref[13:]))
    else:
        query = query.where(User.username == ref)
    user = session.execute(query).scalar_one_or_none()
    if user is None or user.disabled:
        raise NotFound(f"{ref} is not in the directory", location=location)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.execute(select(User).order_by(User.username)).scalars())


def login(session: Session, username: str, password: str, *, session_seconds: float,
          max_failures: int, lockout_seconds: float, source: str = "") -> LoginResult:
    """Check a password and open a session; the caller commits (the audit record too)."""
    now = utcnow()
    failures = session.execute(select(func.count()).select_from(AuditRecord).where(
        AuditRecord.entity == "login", AuditRecord.entity_id == username[:64],
        AuditRecord.outcome == "failure",
        AuditRecord.at >= now - timedelta(seconds=lockout_seconds))).scalar_one()
    if failures >= max_failures:
        append_audit(session, actor=username[:128], action="login", entity="login",
                     entity_id=username[:64], outcome="failure",
                     details={"reason": "locked", "source": source})
        raise LoginLocked
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if not _password_matches(user, password) or user is None or user.disabled:
        append_audit(session, actor=username[:128], action="login", entity="login",
                     entity_id=username[:64], outcome="failure",
                     details={"reason": "refused", "source": source})
        raise LoginRefused
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    session.add(LoginSession(user_id=user.id, token_hash=hash_token(token), revoked=False,
                             expires_at=now + timedelta(seconds=session_seconds)))
    append_audit(session, actor=f"Practitioner/{user.id}", action="login", entity="login",
                 entity_id=username[:64], details={"source": source})
    return LoginResult(token, int(session_seconds),
                       user_principal(user.id, user.username, user.role, user.organization_id))


def _password_matches(user: User | None, password: str) -> bool:
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        ok = _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok and stored is not _DUMMY_HASH


def authenticate_session(session: Session, token: str) -> Principal | None:
    """The principal of a live login session, or None (unknown, expired, revoked, disabled)."""
    if len(token) > MAX_TOKEN_LENGTH or not token.startswith(SESSION_PREFIX):
        return None
    row = session.execute(
        select(LoginSession, User).join(User, User.id == LoginSession.user_id)
        .where(LoginSession.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    login_row, user = row
    expires = login_row.expires_at
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=utcnow().tzinfo)
    if login_row.revoked or user.disabled or expires <= utcnow():
        return None
    return user_principal(user.id, user.username, user.role, user.organization_id)


def logout(session: Session, token: str) -> None:
    row = session.execute(select(LoginSession).where(
        LoginSession.token_hash == hash_token(token))).scalar_one_or_none()
    if row is not None:
        row.revoked = True
        append_audit(session, actor=f"Practitioner/{row.user_id}", action="logout",
                     entity="login", entity_id=str(row.id))

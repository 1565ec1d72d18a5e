"""API tokens: create, authenticate, revoke.

A token is shown once, at creation; the database keeps only its SHA-256. Authentication
hashes the presented token and looks the hash up through the unique index, so the secret is
never compared character by character against stored secrets (no timing side channel), and a
leaked database does not leak usable tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.errors import MappingFailed, NotFound
from bridge.store.models import ApiToken

TOKEN_PREFIX: Final = "brg_"
#: Roles from least to most privileged; a role may do everything the roles before it may.
ROLES: Final = ("viewer", "integration", "admin")
#: Longer input is rejected before hashing: no token is this long.
MAX_TOKEN_LENGTH: Final = 256


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def role_allows(role: str, minimum: str) -> bool:
    """Whether ``role`` may do what ``minimum`` may (unknown roles may do nothing)."""
    if role not in ROLES or minimum not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(minimum)


def create_token(session: Session, *, role: str, name: str = "") -> str:
    """Store a new token for ``role`` and return it; this is the only time it is visible."""
    if role not in ROLES:
        raise MappingFailed(f"unknown role {role!r}; expected one of {', '.join(ROLES)}",
                            location="role")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, token_hash=hash_token(token)))
    session.flush()
    return token


def authenticate(session: Session, token: str | None) -> ApiToken | None:
    """The live token record for ``token``, or None when it is unknown, revoked or malformed."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    record = session.execute(
        select(ApiToken).where(ApiToken.token_hash == digest)
    ).scalar_one_or_none()
    if record is None or record.revoked or not hmac.compare_digest(record.token_hash, digest):
        return None
    return record


def revoke_token(session: Session, *, token_id: int) -> None:
    """Revoke a token for good; revoking twice is harmless."""
    record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFound(f"no API token with id {token_id}")
    record.revoked = True
    session.flush()

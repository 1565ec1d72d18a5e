"""API tokens (bridge.services.auth.tokens) on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.errors import MappingFailed, NotFound
from bridge.services.auth.tokens import authenticate, create_token, revoke_token, role_allows
from bridge.store.models import ApiToken


def test_token_is_stored_only_as_its_hash(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        token = create_token(session, role="integration", name="MIS")
    assert token.startswith("brg_") and len(token) >= 40
    with session_factory() as session:
        record = session.execute(select(ApiToken)).scalar_one()
        assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (record.token_hash, record.name)
        found = authenticate(session, token)
        assert found is not None and found.id == record.id
        assert (found.role, found.name) == ("integration", "MIS")


def test_tokens_are_unique(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        tokens = {create_token(session, role="viewer") for _ in range(20)}
    assert len(tokens) == 20


@pytest.mark.parametrize("presented", [None, "", "brg_wrong", "wrong", "brg_" + "a" * 300])
def test_unknown_tokens_are_refused(session_factory: sessionmaker[Session],
                                    presented: str | None) -> None:
    with session_factory() as session, session.begin():
        create_token(session, role="admin")
    with session_factory() as session:
        assert authenticate(session, presented) is None


def test_revoked_token_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        token = create_token(session, role="admin")
        keep = create_token(session, role="viewer")
    with session_factory() as session, session.begin():
        record = authenticate(session, token)
        assert record is not None
        revoke_token(session, token_id=record.id)
        revoke_token(session, token_id=record.id)  # twice is harmless
    with session_factory() as session:
        assert authenticate(session, token) is None
        assert authenticate(session, keep) is not None
        with pytest.raises(NotFound):
            revoke_token(session, token_id=999999)


def test_unknown_role_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, pytest.raises(MappingFailed):
        create_token(session, role="root")


@pytest.mark.parametrize(("role", "minimum", "allowed"), [
    ("viewer", "viewer", True), ("viewer", "integration", False), ("viewer", "admin", False),
    ("integration", "viewer", True), ("integration", "integration", True),
    ("integration", "admin", False), ("admin", "admin", True), ("admin", "viewer", True),
    ("root", "viewer", False),
])
def test_role_order(role: str, minimum: str, allowed: bool) -> None:
    assert role_allows(role, minimum) is allowed

"""The HTTP adapter's shared dependencies (pure: no server, no database)."""

from __future__ import annotations

from bridge.adapters.http.deps import actor_of
from bridge.store.models import ApiToken


def test_the_audit_actor_is_the_tokens_name_or_else_its_id() -> None:
    named = ApiToken(id=7, name="PACS admin", role="admin", token_hash="x")
    unnamed = ApiToken(id=8, name="", role="admin", token_hash="y")
    assert actor_of(named) == "PACS admin"
    assert actor_of(unnamed) == "token 8"

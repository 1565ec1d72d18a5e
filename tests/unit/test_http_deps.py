"""The HTTP adapter's shared dependencies (pure: no server, no database)."""

from __future__ import annotations

from bridge.adapters.http.deps import actor_of
from bridge.services.auth.principal import token_principal, user_principal


def test_the_audit_actor_is_the_tokens_name_or_else_its_id() -> None:
    assert actor_of(token_principal(7, "PACS admin", "admin")) == "PACS admin"
    assert actor_of(token_principal(8, "", "admin")) == "token 8"


def test_a_users_audit_actor_is_their_practitioner_id_not_their_name() -> None:
    doctor = user_principal(12, "o.petrenko", "family_doctor", 3)
    assert actor_of(doctor) == "Practitioner/12"
    assert doctor.is_clinician and doctor.level == "viewer"
    operator = user_principal(13, "ops", "operator", None)
    assert not operator.is_clinician and operator.level == "admin" and not operator.is_admin

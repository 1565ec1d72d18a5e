"""The caller of a request, whatever proved who they are (an API token, a login, OIDC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

#: Roles of people who log in. Clinicians see only the studies they are entitled to.
CLINICIAN_ROLES: Final = frozenset({"family_doctor", "diagnostics", "consultant"})
USER_ROLES: Final = ("family_doctor", "diagnostics", "consultant", "operator", "admin")
#: What each user role may do among the API's levels (viewer < integration < admin): a
#: clinician reads (filtered to their studies); an operator runs the archive and worklist.
LEVEL_OF_USER_ROLE: Final = {
    "family_doctor": "viewer", "diagnostics": "viewer", "consultant": "viewer",
    "operator": "admin", "admin": "admin",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: ``kind`` says how they proved it, ``level`` what the routes let through."""

    kind: Literal["token", "user", "link"]
    id: int
    #: The token's name or the user's username (for logs at debug level and the console).
    name: str
    #: The token's role (viewer, integration, admin) or the user's (family_doctor, ...).
    role: str
    level: str
    organization_id: int | None = None
    #: A viewer link's study (``kind == "link"``): it reads that study and nothing else.
    study_scope: str | None = None

    @property
    def is_clinician(self) -> bool:
        """Whether reads are filtered to the studies this caller may see."""
        return self.kind == "user" and self.role in CLINICIAN_ROLES

    @property
    def user_id(self) -> int | None:
        return self.id if self.kind == "user" else None

    @property
    def actor(self) -> str:
        """Who did it, for the audit trail: an identifier, never a person's name."""
        if self.kind == "user":
            return f"Practitioner/{self.id}"
        if self.kind == "link":
            return "viewer link"
        return self.name or f"token {self.id}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def token_principal(token_id: int, name: str, role: str) -> Principal:
    return Principal(kind="token", id=token_id, name=name, role=role, level=role)


def user_principal(user_id: int, username: str, role: str,
                   organization_id: int | None) -> Principal:
    return Principal(kind="user", id=user_id, name=username, role=role,
                     level=LEVEL_OF_USER_ROLE.get(role, ""), organization_id=organization_id)


def link_principal(study_uid: str) -> Principal:
    """The holder of a viewer link: no level, so every route but its study's reads refuses."""
    return Principal(kind="link", id=0, name="viewer link", role="link", level="link",
                     study_scope=study_uid)

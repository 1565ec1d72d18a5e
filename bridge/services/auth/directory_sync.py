"""The directory pulled from the registry: Organizations, and Practitioners with their
PractitionerRole, as the national registry holds them.

Users pulled this way have no password (they log in through the identity provider, or once
an admin sets one); their identifier is ``registry:Practitioner/<id>``, the same the referral
follower gives the requester of a registry referral, so both name one user. A role the
registry ends (``active: false``) disables the user. Codes are mapped by
``mappings/fhir/registry_referrals.yaml`` (``practitioner_roles``, ``organization_kinds``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.mapping.tables import read_table
from bridge.store.audit import append_audit
from bridge.store.people_models import Organization, User

log = logging.getLogger("bridge.directory")


class DirectoryClient(Protocol):
    def search(self, resource_type: str, params: list[tuple[str, str]], *,
               strict: bool = True) -> Iterator[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class DirectoryRules:
    roles: Mapping[str, str]
    kinds: Mapping[str, str]

    @classmethod
    def load(cls, mappings_dir: Path) -> DirectoryRules:
        path = mappings_dir / "fhir" / "registry_referrals.yaml"
        table = read_table(path) if path.exists() else {}
        return cls({str(k): str(v) for k, v in (table.get("practitioner_roles") or {}).items()},
                   {str(k): str(v) for k, v in (table.get("organization_kinds") or {}).items()})


@dataclass(slots=True)
class DirectoryResult:
    organizations: int = 0
    users: int = 0
    disabled: int = 0


def registry_user(session: Session, reference: str, *, role: str,
                  display: str = "") -> User:
    """The directory's user for a registry Practitioner reference, added (no password) when
    the directory does not hold them yet; the registry referral follower and the directory
    pull both name users this way."""
    identifier = (f"registry:{reference}" if reference else "registry:unknown")[:64]
    user = session.execute(select(User).where(User.identifier == identifier)
                           ).scalar_one_or_none()
    if user is None:
        user = User(username=identifier, identifier=identifier, role=role,
                    display_name=display[:200], password_hash=None, disabled=False)
        session.add(user)
        session.flush()
    return user


def _codes(concepts: Any) -> list[str]:
    return [str(coding.get("code")) for concept in concepts or []
            for coding in (concept.get("coding") or []) if coding.get("code")]


def _entries(client: DirectoryClient, resource_type: str,
             params: list[tuple[str, str]]) -> Iterator[tuple[dict[str, Any], str]]:
    for bundle in client.search(resource_type, params, strict=False):
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") or {}
            yield resource, str((entry.get("search") or {}).get("mode", "match"))


def pull_directory(client: DirectoryClient, sessions: sessionmaker[Session],
                   rules: DirectoryRules) -> DirectoryResult:
    """One pull of the registry's directory (network reads first, then one transaction)."""
    organizations = [r for r, _ in _entries(client, "Organization", [("_count", "200")])]
    roles, practitioners = [], {}
    for resource, mode in _entries(client, "PractitionerRole", [
            ("_count", "200"), ("_include", "PractitionerRole:practitioner")]):
        if resource.get("resourceType") == "Practitioner":
            practitioners[f"Practitioner/{resource.get('id')}"] = resource
        elif mode == "match":
            roles.append(resource)
    result = DirectoryResult()
    with sessions.begin() as session:
        org_ids = {f"Organization/{o.get('id')}": _upsert_org(session, o, rules, result)
                   for o in organizations}
        for role in roles:
            _upsert_user(session, role, practitioners, org_ids, rules, result)
    log.info("directory pulled: %d organizations, %d users, %d disabled",
             result.organizations, result.users, result.disabled)
    return result


def _upsert_org(session: Session, resource: dict[str, Any], rules: DirectoryRules,
                result: DirectoryResult) -> int | None:
    identifiers = [str(i.get("value")) for i in resource.get("identifier") or []
                   if i.get("value")]
    if not identifiers:
        return None
    kind = next((rules.kinds[c] for c in _codes(resource.get("type")) if c in rules.kinds),
                "hospital")
    org = session.execute(select(Organization).where(
        Organization.identifier == identifiers[0])).scalar_one_or_none()
    if org is None:
        org = Organization(identifier=identifiers[0][:64], name="", kind=kind, active=True)
        session.add(org)
    org.name = str(resource.get("name") or identifiers[0])[:200]
    org.kind = kind
    org.active = resource.get("active", True) is not False
    session.flush()
    result.organizations += 1
    return int(org.id)


def _upsert_user(session: Session, role: dict[str, Any], practitioners: dict[str, Any],
                 org_ids: Mapping[str, int | None], rules: DirectoryRules,
                 result: DirectoryResult) -> None:
    reference = str((role.get("practitioner") or {}).get("reference") or "")
    ours = next((rules.roles[c] for c in _codes(role.get("code")) if c in rules.roles), None)
    if not reference or ours is None:
        return
    practitioner = practitioners.get(reference, {})
    names = practitioner.get("name") or [{}]
    display = str(names[0].get("text") or " ".join(
        [*names[0].get("given", []), names[0].get("family", "")]).strip())
    user = registry_user(session, reference, role=ours)
    active = (role.get("active", True) is not False
              and practitioner.get("active", True) is not False)
    newly_disabled = not active and not user.disabled
    user.role, user.display_name, user.disabled = ours, display[:200], not active
    user.organization_id = org_ids.get(str((role.get("organization") or {}).get("reference")))
    specialties = _codes(role.get("specialty"))
    user.specialty = specialties[0][:64] if specialties else None
    session.flush()
    result.users += 1
    if newly_disabled:
        result.disabled += 1
        append_audit(session, actor="registry", action="user_disable", entity="user",
                     entity_id=str(user.id))


def scheduled_pull(registry_url: str, timeout: float, sessions: sessionmaker[Session],
                   mappings_dir: Path) -> DirectoryResult:
    """One pull with its own client (for the scheduler)."""
    from bridge.clients.fhir import FhirClient

    with FhirClient(registry_url, timeout=timeout) as client:
        return pull_directory(client, sessions, DirectoryRules.load(mappings_dir))

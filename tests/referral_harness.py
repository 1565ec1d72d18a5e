"""The people of the referral tests: a practice, a diagnostics department, a consultants'
department, and clinicians in each, logged in over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session, sessionmaker

from bridge.services.auth.users import create_organization, create_user

PASSWORD = "a long enough password"
#: username → (role, organization identifier)
PEOPLE = {
    "gp": ("family_doctor", "PR-1"),
    "gp2": ("family_doctor", "PR-2"),
    "rad": ("diagnostics", "DX-1"),
    "rad2": ("diagnostics", "DX-2"),
    "cardio": ("consultant", "CN-1"),
    "ops": ("operator", None),
}
ORGANIZATIONS = {"PR-1": "practice", "PR-2": "practice", "DX-1": "diagnostics",
                 "DX-2": "diagnostics", "CN-1": "consultants"}


def make_directory(sessions: sessionmaker[Session]) -> dict[str, int]:
    """The organizations and users above; username → user id."""
    ids = {}
    with sessions.begin() as session:
        for identifier, kind in ORGANIZATIONS.items():
            create_organization(session, identifier=identifier, name=identifier, kind=kind)
        for username, (role, org) in PEOPLE.items():
            ids[username] = create_user(session, username=username, role=role,
                                        password=PASSWORD, organization=org,
                                        identifier=f"ID-{username}",
                                        specialty="cardiology" if role == "consultant"
                                        else None).id
    return ids


@dataclass
class Clinics:
    """A logged-in HTTP client per user."""

    base_url: str
    clients: dict[str, httpx.Client]

    def __getitem__(self, username: str) -> httpx.Client:
        return self.clients[username]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def log_in_everyone(base_url: str) -> Clinics:
    clients = {}
    with httpx.Client(base_url=base_url, timeout=30) as anonymous:
        for username in PEOPLE:
            answer = anonymous.post("/api/login",
                                    json={"username": username, "password": PASSWORD})
            assert answer.status_code == 200, answer.text
            token = answer.json()["access_token"]
            clients[username] = httpx.Client(base_url=base_url, timeout=30,
                                              headers={"Authorization": f"Bearer {token}"})
    return Clinics(base_url, clients)

"""Logins and the directory: ``POST /api/login`` and ``/api/logout`` for clinicians and
operators; ``/api/users`` and ``/api/organizations`` for admins (an admin token or user).

A login answers the same 401 whether the username is unknown, the password wrong or the
user disabled; after ``login_max_failures`` failures within ``login_lockout_seconds`` it
answers 429 without checking the password. Every attempt is in the audit trail.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from bridge.adapters.http.api.schemas import ErrorBody
from bridge.adapters.http.deps import ContextDep, CurrentPrincipal, DirectoryAdmin, SessionDep
from bridge.adapters.http.login import password_login
from bridge.services.auth import users
from bridge.services.auth.principal import USER_ROLES
from bridge.store.people_models import Organization, User

router = APIRouter(prefix="/api", tags=["people"])
Username = Annotated[str, Path(min_length=1, max_length=64)]


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str
    practitioner: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    role: str = Field(description=f"One of {', '.join(USER_ROLES)}")
    password: str | None = Field(default=None, min_length=users.MIN_PASSWORD_LENGTH,
                                 max_length=1024)
    display_name: str = Field(default="", max_length=200)
    organization: str | None = Field(default=None, max_length=64,
                                     description="The organization's identifier")
    specialty: str | None = Field(default=None, max_length=64)
    identifier: str | None = Field(default=None, max_length=64)
    oidc_subject: str | None = Field(default=None, max_length=200)


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: str
    organization_id: int | None
    specialty: str | None
    identifier: str | None
    disabled: bool

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, username=user.username, display_name=user.display_name,
                   role=user.role, organization_id=user.organization_id,
                   specialty=user.specialty, identifier=user.identifier,
                   disabled=user.disabled)


class OrganizationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    identifier: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(description="practice, diagnostics, consultants or hospital")


class OrganizationOut(BaseModel):
    id: int
    identifier: str
    name: str
    kind: str
    active: bool


_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
    409: {"model": ErrorBody}, 422: {"model": ErrorBody},
}


@router.post("/login", response_model=LoginOut, responses={
    401: {"model": ErrorBody}, 429: {"model": ErrorBody}})
def login(body: LoginIn, request: Request, context: ContextDep,
          session: SessionDep) -> LoginOut:
    source = request.client.host if request.client else ""
    result = password_login(session, context.settings, username=body.username,
                            password=body.password, source=source)
    session.commit()
    return LoginOut(access_token=result.token, expires_in=result.expires_in,
                    role=result.principal.role,
                    practitioner=f"Practitioner/{result.principal.id}")


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, principal: CurrentPrincipal, session: SessionDep) -> None:
    header = request.headers.get("authorization", "")
    if principal.kind == "user" and header.lower().startswith("bearer "):
        users.logout(session, header[7:].strip())
        session.commit()


@router.get("/users", response_model=list[UserOut], responses=_ERRORS)
def list_users(_admin: DirectoryAdmin, session: SessionDep) -> list[UserOut]:
    return [UserOut.of(user) for user in users.list_users(session)]


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED,
             responses=_ERRORS)
def create_user(body: UserIn, admin: DirectoryAdmin, session: SessionDep) -> UserOut:
    user = users.create_user(session, actor=admin.actor, **body.model_dump())
    session.commit()
    return UserOut.of(user)


@router.post("/users/{username}/disable", response_model=UserOut, responses=_ERRORS)
def disable_user(username: Username, admin: DirectoryAdmin, session: SessionDep) -> UserOut:
    user = users.set_disabled(session, username, True, actor=admin.actor)
    session.commit()
    return UserOut.of(user)


@router.post("/users/{username}/enable", response_model=UserOut, responses=_ERRORS)
def enable_user(username: Username, admin: DirectoryAdmin, session: SessionDep) -> UserOut:
    user = users.set_disabled(session, username, False, actor=admin.actor)
    session.commit()
    return UserOut.of(user)


@router.get("/organizations", response_model=list[OrganizationOut], responses=_ERRORS)
def list_organizations(_admin: DirectoryAdmin, session: SessionDep) -> list[OrganizationOut]:
    return [OrganizationOut(id=o.id, identifier=o.identifier, name=o.name, kind=o.kind,
                            active=o.active)
            for o in session.execute(select(Organization).order_by(Organization.id)).scalars()]


@router.post("/organizations", response_model=OrganizationOut,
             status_code=status.HTTP_201_CREATED, responses=_ERRORS)
def create_organization(body: OrganizationIn, admin: DirectoryAdmin,
                        session: SessionDep) -> OrganizationOut:
    org = users.create_organization(session, actor=admin.actor, **body.model_dump())
    session.commit()
    return OrganizationOut(id=org.id, identifier=org.identifier, name=org.name, kind=org.kind,
                           active=org.active)

"""Request dependencies: the app's collaborators, a database session, the caller's token.

Routes take them through the ``Annotated`` aliases below (``SessionDep``, ``CurrentToken``,
``ViewerToken``, ``IntegrationToken``, ``AdminToken``, ``ContextDep``), so a route's
signature says what it needs and which role may call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.services.archive.stability import StudyHook
from bridge.services.archive.store import ArchiveStore
from bridge.services.auth.tokens import authenticate, role_allows
from bridge.services.worklist.orders import OrderPolicy
from bridge.storage.ops import StorageOps
from bridge.store.db import read_session
from bridge.store.models import ApiToken


class ReprocessOutcome(Protocol):
    """What re-running a logged HL7 message reports (the HL7 ingest service's result)."""

    @property
    def status(self) -> str: ...

    @property
    def ack_code(self) -> str: ...

    @property
    def error(self) -> str | None: ...


#: Re-runs one logged message by id, in its own transaction.
Reprocess = Callable[[int], ReprocessOutcome]


@dataclass(frozen=True, slots=True)
class AppContext:
    """Everything the routes need, built once by :func:`bridge.adapters.http.app.create_app`."""

    settings: Settings
    session_factory: sessionmaker[Session]
    order_policy: OrderPolicy
    reprocess: Reprocess | None
    #: Takes STOW-RS objects; one for the app (its reconciliation policy read once).
    archive_store: ArchiveStore
    #: Run when an operator reconciles a stable study (forwarding, publishing).
    study_hooks: Sequence[StudyHook] = ()
    #: Run before an operator deletes a study (withdraw its published ImagingStudy).
    delete_hooks: Sequence[StudyHook] = ()
    #: Storage tier operations (cleanup, migration, recall).
    storage: StorageOps | None = None


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """One session per request; routes commit on success, anything else is rolled back."""
    session = context.session_factory()
    try:
        yield session
    finally:
        session.close()  # rolls back what was not committed


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token (`brg_...`), shown once when it is created.",
)


def get_current_token(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Its own read-only session: on SQLite the request's session would otherwise take the
    # write lock for the whole request (a long WADO download would stall every C-STORE).
    with read_session(context.session_factory) as session:
        token = authenticate(session, credentials.credentials)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return token


CurrentToken = Annotated[ApiToken, Depends(get_current_token)]


def require_role(minimum: str) -> Callable[[ApiToken], ApiToken]:
    """A dependency that lets through tokens whose role is ``minimum`` or above."""

    def dependency(token: CurrentToken) -> ApiToken:
        if not role_allows(token.role, minimum):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {minimum} role")
        return token

    return dependency


ViewerToken = Annotated[ApiToken, Depends(require_role("viewer"))]
IntegrationToken = Annotated[ApiToken, Depends(require_role("integration"))]
AdminToken = Annotated[ApiToken, Depends(require_role("admin"))]


def actor_of(token: ApiToken) -> str:
    """Who did it, for the audit log: the token's name, or ``token {id}`` when it has none."""
    return token.name or f"token {token.id}"

"""Request dependencies: the app's collaborators, a database session, the caller's token.

Routes take them through the ``Annotated`` aliases below (``SessionDep``,
``CurrentPrincipal``, ``ViewerToken``, ``IntegrationToken``, ``AdminToken``,
``DirectoryAdmin``, ``ContextDep``), so a route's signature says what it needs and which
level may call it. Every alias hands the route a :class:`Principal`, whether the caller is a
system with an API token or a clinician logged in.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Final, Protocol

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.recent_reads import RecentReads
from bridge.config.settings import Settings
from bridge.mapping.links.signing import LINK_PREFIX, LinkProblem, check_link, csrf_token
from bridge.services.archive.stability import StudyHook
from bridge.services.archive.store import ArchiveStore
from bridge.services.auth.oidc import OidcVerifier, looks_like_jwt
from bridge.services.auth.principal import Principal, link_principal, token_principal
from bridge.services.auth.tokens import authenticate, role_allows
from bridge.services.auth.users import SESSION_PREFIX, authenticate_session
from bridge.services.links.secret import console_secret
from bridge.services.worklist.orders import OrderPolicy
from bridge.storage.ops import StorageOps
from bridge.store.db import read_session


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
    #: Validates identity-provider JWTs when OIDC is configured.
    oidc: OidcVerifier | None = None
    #: Streams of frame reads audited once per window (rendered frames, thumbnails).
    recent_reads: RecentReads = field(default_factory=lambda: RecentReads(0))


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
    description="An API token for systems (`brg_...`, shown once when it is created), a "
    "clinician's login (`brs_...`, from `POST /api/login`) or, when OIDC is configured, a "
    "JWT from the hospital's identity provider. A viewer link's token (`brl_...`, from "
    "`GET /api/links`) reads its one study's DICOMweb resources and nothing else.",
)


def _unauthorized(detail: str, error: str = "") -> HTTPException:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail,
                         headers={"WWW-Authenticate": challenge})


#: The console's cookies: the login (HttpOnly) and its CSRF token (readable by the page's
#: script, sent back in :data:`CSRF_HEADER` on every request that changes something).
SESSION_COOKIE: Final = "bridge_session"
CSRF_COOKIE: Final = "bridge_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def get_principal(
    request: Request,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Who calls, from whichever credential they present (a bearer token, else the console's
    login cookie); 401 when none holds."""
    if credentials is not None:
        presented = credentials.credentials
    else:
        presented = request.cookies.get(SESSION_COOKIE, "")
        if not presented:
            raise _unauthorized("missing bearer token")
        _check_csrf(request, context, presented)
    if presented.startswith(LINK_PREFIX):
        return _link_principal(context, presented)
    # Its own read-only session: on SQLite the request's session would otherwise take the
    # write lock for the whole request (a long WADO download would stall every C-STORE).
    with read_session(context.session_factory) as session:
        principal: Principal | None = None
        if presented.startswith(SESSION_PREFIX):
            principal = authenticate_session(session, presented)
        elif context.oidc is not None and looks_like_jwt(presented):
            principal = context.oidc.authenticate(session, presented)
        else:
            token = authenticate(session, presented)
            if token is not None:
                principal = token_principal(token.id, token.name, token.role)
    if principal is None:
        raise _unauthorized("invalid, expired or revoked credentials", "invalid_token")
    return principal


def _check_csrf(request: Request, context: AppContext, session_token: str) -> None:
    """A cookie goes with every request the browser makes, a forged one from another site
    too: what changes something must also carry the token only our own pages can read."""
    if request.method in _SAFE_METHODS:
        return
    expected = csrf_token(console_secret(context.settings), session_token)
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "missing or wrong CSRF token: reload the console page")


def _link_principal(context: AppContext, token: str) -> Principal:
    claim = check_link(console_secret(context.settings), token, time.time())
    if isinstance(claim, LinkProblem):
        raise _unauthorized(claim.message, "invalid_token")
    return link_principal(claim.study_uid)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
#: Kept for the routes written before logins: the caller, whatever their credential.
CurrentToken = CurrentPrincipal


def require_role(minimum: str) -> Callable[[Principal], Principal]:
    """A dependency that lets through callers whose level is ``minimum`` or above.

    Clinicians are refused here whatever their level: the routes they may use say so with
    :func:`bridge.adapters.http.access.patient_data_reader`, which filters what they see, so
    a new route is closed to them until it is written to filter."""

    def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.is_clinician:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                "this is for systems and operators, not clinicians")
        if not role_allows(principal.level, minimum):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {minimum} role")
        return principal

    return dependency


def require_admin(principal: CurrentPrincipal) -> Principal:
    """Managing users and tokens: an admin token or an admin user, not an operator."""
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs the admin role")
    return principal


ViewerToken = Annotated[Principal, Depends(require_role("viewer"))]
IntegrationToken = Annotated[Principal, Depends(require_role("integration"))]
AdminToken = Annotated[Principal, Depends(require_role("admin"))]
DirectoryAdmin = Annotated[Principal, Depends(require_admin)]


def actor_of(principal: Principal) -> str:
    """Who did it, for the audit trail (an identifier, never a person's name)."""
    return principal.actor

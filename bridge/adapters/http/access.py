"""Reads of patient data over HTTP: who may read, what they may see, and the audit record.

Routes that serve patient data take :func:`patient_data_reader` as a dependency: it lets
clinicians through (their reads are then filtered to their studies in the database query,
see :mod:`bridge.services.access.visibility`) and systems and operators with at least the
route's level, and it keeps the caller on ``request.state`` for :func:`viewer_of` and
:func:`audit_read`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from bridge.adapters.http.deps import AppContext, CurrentPrincipal
from bridge.services.auth.principal import Principal
from bridge.services.auth.tokens import role_allows
from bridge.store.audit import append_audit

log = logging.getLogger("bridge.http")


def patient_data_reader(minimum: str) -> Callable[[Request, Principal], Principal]:
    """A dependency: clinicians (filtered) or callers at ``minimum`` level or above."""

    def dependency(request: Request, principal: CurrentPrincipal) -> Principal:
        if principal.kind == "link":
            _check_link_scope(request, principal)
        elif not (principal.is_clinician or role_allows(principal.level, minimum)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {minimum} role")
        request.state.principal = principal
        return principal

    return dependency


def _check_link_scope(request: Request, principal: Principal) -> None:
    """A viewer link reads the resources of its own study (``/dicomweb/studies/{uid}/...``)
    and nothing else: no search across studies, no other study, nothing written."""
    study = f"/dicomweb/studies/{principal.study_scope}"
    path = request.url.path
    if request.method != "GET" or not (path == study or path.startswith(study + "/")):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "a viewer link opens its own study and nothing else")


#: Viewer-level routes that clinicians may use too (filtered to their patients).
ClinicianOrViewer = Annotated[Principal, Depends(patient_data_reader("viewer"))]


def principal_of(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def viewer_of(request: Request) -> int | None:
    """The clinician whose access filter applies, or None (a system, an operator)."""
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal) and principal.is_clinician:
        return principal.id
    return None


def audit_read(context: AppContext, request: Request, *, action: str, entity: str,
               entity_id: str, patient_ref: str | None = None,
               details: Mapping[str, object] | None = None, coalesce: bool = False) -> None:
    """One audit record for a read of patient data, committed before the answer leaves.
    With ``coalesce`` (a stream of frame reads), only the first read of the actor, from its
    address, of this entity in the window is recorded (:mod:`.recent_reads`)."""
    principal = getattr(request.state, "principal", None)
    actor = principal.actor if isinstance(principal, Principal) else "anonymous"
    source = request.client.host if request.client else ""
    # The details (level, kind, counts) are part of the key: the same study's thumbnail
    # and its frames are each recorded once; frame after frame of a series, once.
    key = (actor, source, action, entity, entity_id,
           tuple(sorted((k, str(v)) for k, v in (details or {}).items()))) if coalesce else None
    if key is not None and not context.recent_reads.first_in_window(key):
        return
    try:
        with context.session_factory.begin() as session:
            append_audit(session, actor=actor, action=action, entity=entity,
                         entity_id=entity_id[:64], patient_ref=patient_ref,
                         details={"path": request.url.path[:200], "source": source,
                                  **(details or {})})
    except BaseException:
        if key is not None:
            context.recent_reads.forget(key)
        raise

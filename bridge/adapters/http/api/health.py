"""``GET /health``: open to everyone, so load balancers and monitors need no token."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bridge.adapters.http.api.schemas import HealthStatus
from bridge.adapters.http.deps import ContextDep

log = logging.getLogger("bridge.http")
router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthStatus,
    responses={503: {"model": HealthStatus, "description": "The database is unreachable"}},
)
def health(context: ContextDep) -> HealthStatus | JSONResponse:
    """Whether the bridge can reach its database (runs ``SELECT 1``)."""
    try:
        with context.session_factory() as session:
            session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        log.warning("health check: database unreachable (%s)", type(exc).__name__)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return HealthStatus(status="ok")

"""The console's pages and files. The pages are the same for everyone: what a page shows
comes from the API, which applies the caller's access rules; a page without a login sends
the browser to the log-in page."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from bridge.adapters.http.console import session
from bridge.adapters.http.console.session import pre_login_cookie

STATIC: Final = Path(__file__).resolve().parent / "static"
router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("")
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/")
def app_shell() -> FileResponse:
    """Every operator and clinician page (``#/dashboard``, ``#/messages``, ...)."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/login")
def login_page(request: Request) -> Response:
    response = FileResponse(STATIC / "login.html", media_type="text/html")
    pre_login_cookie(request, response)
    return response


@router.get("/view")
def link_viewer() -> FileResponse:
    """The viewer for an MIS link (the token is in the URL's fragment, never sent here)."""
    return FileResponse(STATIC / "view.html", media_type="text/html")


def mount_console(app: FastAPI) -> None:
    app.include_router(session.router)
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

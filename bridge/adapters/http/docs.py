"""``/docs``: the OpenAPI documentation in Swagger UI, served from files shipped with the
bridge (the ``fastapi-swagger`` wheel's Swagger UI 5) so the page works on a hospital network
with no internet and loads nothing from a CDN. The page and its files need no token (they
hold no data); "Try it out" takes the operator's bearer token like any client."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
_FILES = f"{DOCS_URL}/static"


def mount_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` (create the app with ``docs_url=None``)."""
    files = resources.files("fastapi_swagger") / "resources"
    app.mount(_FILES, StaticFiles(directory=str(files)), name="docs-static")

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{_FILES}/swagger-ui-bundle.js",
            swagger_css_url=f"{_FILES}/swagger-ui.css",
            swagger_favicon_url=f"{_FILES}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": False})

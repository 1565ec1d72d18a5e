"""The HTTP API over real sockets for tests: uvicorn on a free port, httpx as the client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from bridge.services.auth.tokens import create_token
from tests.conftest import free_port

#: The roles :func:`make_tokens` makes a token for, lowest first.
ROLES = ("viewer", "integration", "admin")


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` in uvicorn on a free port in a thread; yield its base URL; stop it after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, log_level="warning",
    ))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "uvicorn did not stop"


def make_tokens(session_factory: sessionmaker[Session]) -> dict[str, str]:
    """One token per role, named ``test {role}``: role → the token's secret."""
    with session_factory() as session, session.begin():
        return {role: create_token(session, role=role, name=f"test {role}") for role in ROLES}


@dataclass
class Api:
    """A served app and a token per role (:func:`make_tokens`)."""

    url: str
    tokens: dict[str, str]
    session_factory: sessionmaker[Session]

    def client(self, role: str | None = None, token: str | None = None) -> httpx.Client:
        token = token or (self.tokens[role] if role else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def running_api(app: FastAPI, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    """``app`` served (:func:`serve`) with a token per role (:func:`make_tokens`)."""
    tokens = make_tokens(session_factory)
    with serve(app) as url:
        yield Api(url, tokens, session_factory)

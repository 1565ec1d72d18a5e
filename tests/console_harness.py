"""The console for tests: a bridge app served over a real socket with the referral tests'
people (:mod:`tests.referral_harness`), and an httpx client that logs in as the console's
page does (pre-login CSRF cookie, ``POST /console/session``), so its requests carry the
login cookie and, when asked, the CSRF header."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.referral_harness import PASSWORD


@contextmanager
def console_client(base_url: str, username: str | None = None, *, token: str | None = None,
                   password: str = PASSWORD) -> Iterator[httpx.Client]:
    """A client logged in to the console (cookies set); the CSRF header is not added."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        page = client.get("/console/login")
        assert page.status_code == 200, page.text
        body = {"token": token} if token else {"username": username, "password": password}
        answer = client.post("/console/session", json=body, headers={
            "X-CSRF-Token": client.cookies.get("bridge_csrf", path="/console") or ""})
        assert answer.status_code == 200, answer.text
        yield client


def csrf_of(client: httpx.Client) -> dict[str, str]:
    """The header a console page adds to what changes something."""
    return {"X-CSRF-Token": client.cookies.get("bridge_csrf", path="/") or ""}

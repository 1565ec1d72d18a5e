"""A real FHIR R4 server (``sekmet-fhir``, installed in ``.venv``) as a peer for tests and benches.

``running_sekmet(tmp_dir)`` writes a ``settings.yaml`` into ``tmp_dir``, starts
``sekmet serve --host 127.0.0.1 --port <free>`` with ``tmp_dir`` as its working directory (it
writes ``./data`` there) and waits until ``GET /fhir/metadata`` answers. The FHIR base is
``http://127.0.0.1:<port>/fhir`` (:attr:`SekmetPeer.base_url`).

What the configuration changes from sekmet's defaults, and why:
- ``base_url`` carries the real port, so ``Location`` headers and ``fullUrl`` point back here.
- The **simulator is off** unless asked for: by default sekmet plays the filler for every active
  ServiceRequest written to it and, after 2 s, creates its *own* ImagingStudy and report for
  it, which would be indistinguishable from what the bridge publishes.
- No inbound authentication (sekmet's default); inbound validation stays ``strict``, so an
  invalid resource is answered 400/422 as a production server would.

``stop()`` and ``start()`` take the same server down and bring it back on the same port and
data, to simulate a FHIR server that is unreachable for a while.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.peer_process import PeerProcess, free_port

# Variables sekmet reads that would point it elsewhere than the folder and port chosen here.
_SEKMET_ENV = ("SEKMET_CONFIG", "SEKMET_BASE_URL", "SEKMET_DB", "SEKMET_PUBLIC_URL", "SEKMET_PORT")


def sekmet_binary() -> str | None:
    """``sekmet`` next to the running interpreter (the project's ``.venv/bin``), else None."""
    candidate = Path(sys.executable).parent / "sekmet"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def require_sekmet() -> str:
    """The executable's path, or skip (fail under ``BRIDGE_REQUIRE_PEERS=1``) when missing."""
    binary = sekmet_binary()
    if binary is None:
        from tests.conftest import missing_peer  # pytest only when a test really needs it

        missing_peer("sekmet-fhir not installed in the virtualenv (pip install sekmet-fhir)")
    assert binary is not None
    return binary


class SekmetPeer(PeerProcess):
    """One sekmet process and what a test needs to talk to it (JSON only)."""

    name = "sekmet"
    health_path = "/metadata"
    stop_timeout = 15.0

    def __init__(self, binary: str, work_dir: Path, *, port: int) -> None:
        self.binary = binary
        self.work_dir = work_dir
        self.port = port
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/fhir"
        super().__init__(work_dir / "sekmet.log")

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0,
                            headers={"Accept": "application/fhir+json"})

    def _command(self) -> tuple[list[str], Path | None, dict[str, str] | None]:
        env = {key: value for key, value in os.environ.items() if key not in _SEKMET_ENV}
        return ([self.binary, "serve", "--config", str(self.work_dir / "settings.yaml"),
                 "--host", "127.0.0.1", "--port", str(self.port)], self.work_dir, env)

    # ---- FHIR helpers (raise on an HTTP error; the tests look at the resources) ----

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One raw call relative to the FHIR base (e.g. ``"Patient?identifier=s|v"``)."""
        return self.http.request(method, path, **kwargs)

    def create(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """``POST {type}``; returns the stored resource (with its server id)."""
        response = self.http.post(f"/{resource['resourceType']}", json=dict(resource),
                                  headers={"Prefer": "return=representation"})
        response.raise_for_status()
        created: dict[str, Any] = response.json()
        return created

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        response = self.http.get(f"/{resource_type}/{resource_id}")
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        """Every match of one search (follows ``next`` links), as resources."""
        found: list[dict[str, Any]] = []
        response = self.http.get(f"/{resource_type}", params=params)
        while True:
            response.raise_for_status()
            bundle = response.json()
            found.extend(entry["resource"] for entry in bundle.get("entry", [])
                         if entry.get("search", {}).get("mode", "match") == "match")
            next_url = next((link["url"] for link in bundle.get("link", [])
                             if link.get("relation") == "next"), None)
            if next_url is None:
                return found
            response = self.http.get(next_url)

    def history(self, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
        """Every stored version of one resource (newest first, as FHIR's ``_history``)."""
        response = self.http.get(f"/{resource_type}/{resource_id}/_history")
        response.raise_for_status()
        return [entry["resource"] for entry in response.json().get("entry", [])
                if "resource" in entry]


def sekmet_settings(work_dir: Path, *, port: int, simulator: bool = False,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """sekmet's ``settings.yaml`` content: a contained, local test server."""
    settings: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{port}/fhir",
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(work_dir / "data"),
        "simulator": {"enabled": simulator},
        "log_inbound": False,  # the traffic log only costs time here
    }
    settings.update(extra or {})
    return settings


@contextmanager
def running_sekmet(tmp_dir: Path, *, port: int | None = None, simulator: bool = False,
                   extra_settings: Mapping[str, Any] | None = None,
                   binary: str | None = None) -> Iterator[SekmetPeer]:
    """sekmet running for the duration of the block, everything under ``tmp_dir``.

    ``simulator=True`` lets sekmet play the filler for ServiceRequests (off by default, see the
    module docs); ``extra_settings`` overrides any top-level setting. Without ``binary`` the
    test is skipped (failed under ``BRIDGE_REQUIRE_PEERS=1``) when sekmet is not installed.
    """
    binary = binary or require_sekmet()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    settings = sekmet_settings(tmp_dir, port=port, simulator=simulator, extra=extra_settings)
    (tmp_dir / "settings.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    peer = SekmetPeer(binary, tmp_dir, port=port)
    try:
        peer.start()
        yield peer
    finally:
        peer.close()

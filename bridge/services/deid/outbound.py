"""The destinations de-identified objects go to, and come back from.

Each is built from a destination's URL (:class:`~bridge.config.deid_destinations.DeidDestination`):

- ``file:///folder`` and ``s3://bucket/prefix``: a blob store (the long-term tier's own
  backends: durable ``put``, verified ``fetch``); objects are kept under
  ``<pseudo study>/<pseudo series>/<pseudo instance>.dcm``;
- ``dicom://AE``: a DICOM peer of ``BRIDGE_DICOM_PEERS`` by C-STORE, fetched back by C-GET;
- ``http(s)://…/dicom-web``: STOW-RS, fetched back by WADO-RS.

``send`` takes a batch of objects (one association, one request) and returns where each one
is kept there; ``fetch`` brings one back as bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Protocol

from bridge.clients.dicom_scu import DicomScu
from bridge.clients.dicomweb import DicomWebClient
from bridge.config.deid_destinations import DeidDestination
from bridge.config.settings import Settings
from bridge.errors import NotFound, Transient
from bridge.storage.blobs.factory import open_store
from bridge.storage.blobs.file_store import FileBlobStore
from bridge.storage.blobs.protocol import BlobStore, BlobStoreError, StoreUnavailable
from bridge.storage.durable import fsync_dir
from bridge.store.deid_models import DeidObject


class Outgoing(Protocol):
    """One object to send: its bytes and the pseudonymous UIDs it is kept under."""

    output: bytes
    sop_class_uid: str
    pseudo_study_uid: str
    pseudo_series_uid: str
    pseudo_sop_uid: str


class Outbound(Protocol):
    def send(self, objects: Sequence[Outgoing]) -> list[str]: ...

    def fetch(self, location: str, *, study: str, series: str, instance: str,
              sop_class: str) -> bytes: ...

    def close(self) -> None: ...


class BlobOutbound:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def send(self, objects: Sequence[Outgoing]) -> list[str]:
        locations = []
        folders: set[Path] = set()
        try:
            for item in objects:
                key = self.store.key_for(f"{item.pseudo_study_uid}/{item.pseudo_series_uid}/"
                                         f"{item.pseudo_sop_uid}.dcm")
                if isinstance(self.store, FileBlobStore):
                    # One fsync per folder for the batch, not per file (a series' folder).
                    self.store.put_bytes(item.output, key, sync_directory=False)
                    folders.add((self.store.root / key).parent)
                else:
                    self.store.put_bytes(item.output, key)
                locations.append(key)
            for folder in folders:
                fsync_dir(folder)
        except (StoreUnavailable, BlobStoreError, OSError) as exc:
            raise Transient(f"{self.store.location}: {type(exc).__name__}: {exc}") from None
        return locations

    def fetch(self, location: str, *, study: str, series: str, instance: str,
              sop_class: str) -> bytes:
        buffer = BytesIO()
        try:
            self.store.fetch(location, buffer)
        except (BlobStoreError, OSError) as exc:
            raise Transient(f"{self.store.location}: cannot read {location}: "
                            f"{type(exc).__name__}") from None
        return buffer.getvalue()

    def close(self) -> None:
        return None


class DicomOutbound:
    def __init__(self, scu: DicomScu) -> None:
        self.scu = scu

    def send(self, objects: Sequence[Outgoing]) -> list[str]:
        self.scu.store([item.output for item in objects])
        return [f"dicom://{self.scu.peer_ae}/{item.pseudo_sop_uid}" for item in objects]

    def fetch(self, location: str, *, study: str, series: str, instance: str,
              sop_class: str) -> bytes:
        return self.scu.get(study, series, instance, sop_class)

    def close(self) -> None:
        self.scu.close()


class DicomWebOutbound:
    def __init__(self, client: DicomWebClient) -> None:
        self.client = client

    def send(self, objects: Sequence[Outgoing]) -> list[str]:
        self.client.store([item.output for item in objects])
        return [self.client.instance_url(item.pseudo_study_uid, item.pseudo_series_uid,
                                         item.pseudo_sop_uid) for item in objects]

    def fetch(self, location: str, *, study: str, series: str, instance: str,
              sop_class: str) -> bytes:
        return self.client.instance(study, series, instance)

    def close(self) -> None:
        self.client.close()


def open_outbound(destination: DeidDestination, settings: Settings) -> Outbound:
    scheme = destination.scheme
    if scheme in ("file", "s3"):
        return BlobOutbound(open_store(destination.url, settings))
    if scheme == "dicom":
        peer = settings.peer(destination.peer_ae or "")
        if peer is None or not peer.host or not peer.port:
            raise NotFound(f"{destination.name}: {destination.peer_ae} is not a DICOM peer "
                           "with a host and a port", location="deid_destinations")
        return DicomOutbound(DicomScu(ae_title=settings.ae_title, host=peer.host,
                                      port=peer.port, peer_ae=peer.ae_title))
    return DicomWebOutbound(DicomWebClient(destination.url))


def fetch_object(outbound: Outbound, row: DeidObject, pseudo_study_uid: str) -> bytes:
    """One sent object back from its destination, by where it was put and its pseudonyms."""
    return outbound.fetch(row.location, study=pseudo_study_uid,
                          series=row.pseudo_series_uid or "", instance=row.pseudo_sop_uid or "",
                          sop_class=row.sop_class_uid or "")

"""A small DICOMweb client (httpx): STOW-RS to a server's ``/studies`` and WADO-RS of one
instance back, for de-identified exports to a DICOMweb archive (Orthanc's DICOMweb plugin,
dcm4chee-arc). Errors are the bridge's kinds, by the FHIR client's table (5xx, timeouts and
connection errors are :class:`~bridge.errors.Transient`)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Final

import httpx

from bridge.clients.fhir import error_for_status, translate_error
from bridge.errors import Rejected

DICOM: Final = "application/dicom"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


class DicomWebClient:
    def __init__(self, base_url: str, *, timeout: float = 60.0,
                 headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout, headers=headers or {})

    def close(self) -> None:
        self.http.close()

    def store(self, objects: Sequence[bytes]) -> None:
        """One STOW-RS request with every object; a refused one is a :class:`Rejected`."""
        boundary = secrets.token_hex(16)
        body = bytearray()
        for data in objects:
            body += f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode()
            body += data
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        what = f"STOW-RS {self.base_url}/studies"
        try:
            response = self.http.post(
                f"{self.base_url}/studies", content=bytes(body),
                headers={"Content-Type": f'multipart/related; type="{DICOM}"; '
                                         f"boundary={boundary}",
                         "Accept": "application/dicom+json"})
        except httpx.HTTPError as exc:
            raise translate_error(exc, what) from None
        if response.status_code == 202:
            raise Rejected(f"{what}: some objects were refused (202)")
        if response.status_code >= 300:
            raise error_for_status(response.status_code, what)

    def instance(self, study: str, series: str, instance: str) -> bytes:
        """WADO-RS of one instance as it is stored there (``application/dicom``)."""
        path = f"{self.base_url}/studies/{study}/series/{series}/instances/{instance}"
        what = "WADO-RS instance"
        try:
            response = self.http.get(path, headers={
                "Accept": f'multipart/related; type="{DICOM}"; transfer-syntax=*'})
        except httpx.HTTPError as exc:
            raise translate_error(exc, what) from None
        if response.status_code >= 300:
            raise error_for_status(response.status_code, what)
        parts = split_multipart(response.content, response.headers.get("content-type", ""))
        if len(parts) != 1:
            raise Rejected(f"{what}: {len(parts)} parts, expected 1")
        return parts[0]

    def instance_url(self, study: str, series: str, instance: str) -> str:
        return f"{self.base_url}/studies/{study}/series/{series}/instances/{instance}"


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts' contents of a whole ``multipart/related`` body."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise Rejected("a DICOMweb answer without a multipart boundary")
    delimiter = b"--" + match.group(1).encode()
    parts: list[bytes] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise Rejected("a DICOMweb part without headers")
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    return parts

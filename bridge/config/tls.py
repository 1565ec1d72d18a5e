"""TLS for the bridge's listeners (DICOM, MLLP, HTTP), from the settings: one server context
that every listener shares, and the peer certificate's common name.

TLS 1.2 or newer, as BCP 195 and DICOM's profiles for it (PS3.15 B.9, B.10) ask: DCMTK's
default "BCP 195 non-downgrading" profile connects; the ciphers are Python's defaults (forward
secret AES-GCM and ChaCha20 suites). Client certificates are checked against
``tls_client_ca`` when the settings ask for them; a DICOM peer's ``tls_subject`` ties its AE
title to its certificate (:mod:`bridge.adapters.dicom.association_policy`).
"""

from __future__ import annotations

import ssl
from typing import Any

from bridge.config.settings import Settings

_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
           "required": ssl.CERT_REQUIRED}


def server_context(settings: Settings) -> ssl.SSLContext:
    """The listeners' context; the settings were checked (files present) when loaded."""
    assert settings.tls_certificate is not None and settings.tls_private_key is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    context.verify_mode = _VERIFY[settings.tls_client_certificates]
    if settings.tls_client_ca is not None and context.verify_mode != ssl.CERT_NONE:
        context.load_verify_locations(cafile=str(settings.tls_client_ca))
    return context


def common_name(certificate: dict[str, Any] | None) -> str | None:
    """The subject's CN of a verified peer certificate (``SSLSocket.getpeercert()``)."""
    if not certificate:
        return None
    for entry in certificate.get("subject", ()):
        for key, value in entry:
            if key == "commonName":
                return str(value)
    return None

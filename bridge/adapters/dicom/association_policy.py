"""Who may associate: the peer allow-list (``dicom_peers``) when ``dicom_strict_peers``, and
over TLS, for a peer with a ``tls_subject``, only with that client certificate."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event, EventHandlerType

from bridge.config.settings import Settings
from bridge.config.tls import common_name

logger = logging.getLogger("bridge.dicom")

# A-ASSOCIATE-RJ: rejected-permanent, service-user, calling-AE-title-not-recognized.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    strict: bool
    #: AE title → the addresses it may come from (empty: any address).
    peers: Mapping[str, frozenset[str]]
    #: AE title → the common name its client certificate must have.
    subjects: Mapping[str, str] = field(default_factory=dict)

    def certificate_allows(self, calling_ae: str, subject: str | None) -> bool:
        expected = self.subjects.get(calling_ae.strip())
        return expected is None or subject == expected

    def allows(self, calling_ae: str, address: str) -> bool:
        if not self.strict:
            return True
        allowed = self.peers.get(calling_ae.strip())
        if allowed is None:
            return False
        return not allowed or address in allowed


def peer_policy(settings: Settings) -> PeerPolicy:
    """Resolve the peers' host names once, at start, not in every association."""
    return PeerPolicy(
        strict=settings.dicom_strict_peers,
        peers={p.ae_title: _addresses(p.host) for p in settings.dicom_peers},
        subjects={p.ae_title: p.tls_subject for p in settings.dicom_peers if p.tls_subject},
    )


def _addresses(host: str | None) -> frozenset[str]:
    if not host:
        return frozenset()
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        logger.warning("DICOM peer host %s does not resolve; it cannot associate", host)
        return frozenset({"<unresolved>"})
    return frozenset(str(info[4][0]) for info in infos) | {host}


def handle_requested(event: Event, policy: PeerPolicy) -> None:
    """EVT_REQUESTED: reject an unknown calling AE before any negotiation."""
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling_ae = str(getattr(primitive, "calling_ae_title", "") or "").strip()
    address = str(assoc.requestor.address)
    if not policy.allows(calling_ae, address):
        why = "calling AE not recognized"
    elif not policy.certificate_allows(calling_ae, _certificate_subject(assoc)):
        why = "the calling AE's TLS client certificate is not the one configured"
    else:
        return
    logger.warning("association from %s rejected: %s", address, why,
                   extra={"calling_ae": calling_ae, "accession": None})
    assoc.acse.send_reject(*_REJECT_CALLING_AE)
    assoc.kill()


def _certificate_subject(assoc: Any) -> str | None:
    sock = getattr(assoc.dul.socket, "socket", None)
    if isinstance(sock, ssl.SSLSocket):
        return common_name(sock.getpeercert())
    return None


def policy_handlers(settings: Settings) -> list[EventHandlerType]:
    if not settings.dicom_strict_peers and not any(p.tls_subject for p in settings.dicom_peers):
        return []
    return [(evt.EVT_REQUESTED, handle_requested, [peer_policy(settings)])]

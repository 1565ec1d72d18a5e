"""Who may associate: the peer allow-list (``dicom_peers``) when ``dicom_strict_peers``."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.events import Event, EventHandlerType

from bridge.config.settings import Settings

logger = logging.getLogger("bridge.dicom")

# A-ASSOCIATE-RJ: rejected-permanent, service-user, calling-AE-title-not-recognized.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    strict: bool
    #: AE title → the addresses it may come from (empty: any address).
    peers: Mapping[str, frozenset[str]]

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
    if policy.allows(calling_ae, address):
        return
    logger.warning(
        "association from %s rejected: calling AE not recognized", address,
        extra={"calling_ae": calling_ae, "accession": None},
    )
    assoc.acse.send_reject(*_REJECT_CALLING_AE)
    assoc.kill()


def policy_handlers(settings: Settings) -> list[EventHandlerType]:
    if not settings.dicom_strict_peers:
        return []
    return [(evt.EVT_REQUESTED, handle_requested, [peer_policy(settings)])]

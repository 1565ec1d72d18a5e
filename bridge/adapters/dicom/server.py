"""The bridge's DICOM server: one pynetdicom AE, non-blocking, built from services.

``start_dicom_server`` is called by the composition root; ``DicomServer.shutdown`` stops
it. Verification, Modality Worklist and MPPS are offered by default; more services (storage,
query/retrieve) are passed in as :class:`DicomService` values.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.association_policy import policy_handlers
from bridge.adapters.dicom.mpps_scp import mpps_service
from bridge.adapters.dicom.service import DicomService, ServiceFactory
from bridge.adapters.dicom.supported_contexts import share_uids
from bridge.adapters.dicom.worklist_scp import worklist_service
from bridge.config.settings import Settings
from bridge.config.tls import server_context

logger = logging.getLogger("bridge.dicom")


def verification_service(
    settings: Settings, session_factory: sessionmaker[Session]
) -> DicomService:
    # pynetdicom answers C-ECHO itself (Success) when no handler is bound.
    return DicomService(name="verification", sop_classes=(str(Verification),))


def _no_delay(event: Event) -> None:
    """pynetdicom writes a DIMSE message as separate PDUs (command, then data set); with
    Nagle's algorithm the second waits for the peer's delayed ACK: ~40 ms per response.

    And a timeout on the connection's reads: pynetdicom reads the rest of a PDU with a
    blocking ``recv``, so a peer that stops inside one would hold its thread (one of
    ``dicom_max_associations``) for ever; with a timeout the read fails, pynetdicom closes
    the connection (its "transport closed" event)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(event.assoc.ae.network_timeout)


#: Largest PDU the bridge accepts.
MAX_PDU_BYTES = 1 << 20

DEFAULT_SERVICES: tuple[ServiceFactory, ...] = (
    verification_service,
    worklist_service,
    mpps_service,
)


@dataclass(slots=True)
class DicomServer:
    ae: AE
    server: ThreadedAssociationServer

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when ``dicom_port`` is 0)."""
        return int(self.server.server_address[1])

    def shutdown(self) -> None:
        """Stop listening and end the open associations."""
        self.server.shutdown()
        self.ae.shutdown()


def start_dicom_server(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    services: Sequence[ServiceFactory] = DEFAULT_SERVICES,
    extra_services: Sequence[DicomService] = (),
) -> DicomServer:
    """Listen on ``(settings.bind, settings.dicom_port)`` as ``settings.ae_title``."""
    built = [factory(settings, session_factory) for factory in services]
    built.extend(extra_services)
    _quiet_pynetdicom()
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.dicom_max_associations
    # A peer that stops mid-PDU or never sends its request holds its thread this long only.
    ae.network_timeout = settings.dicom_network_timeout_seconds
    ae.acse_timeout = min(ae.acse_timeout or settings.dicom_network_timeout_seconds,
                          settings.dicom_network_timeout_seconds)
    # Larger PDUs than pynetdicom's 16 KB default: far fewer reads and decodes per object
    # (about 10 % more C-STORE throughput), while one PDU stays small in memory.
    ae.maximum_pdu_size = MAX_PDU_BYTES
    handlers: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, _no_delay)]
    handlers.extend(policy_handlers(settings))
    handlers.extend(_bind_handlers(built))
    offered: set[str] = set()
    for service in built:
        for sop_class in service.sop_classes:
            # The grid gateway offers the storage and query classes the archive offers too.
            if sop_class in offered:
                continue
            offered.add(sop_class)
            if service.role_selection:
                ae.add_supported_context(sop_class, _syntaxes(service),
                                         scu_role=True, scp_role=True)
            else:
                ae.add_supported_context(sop_class, _syntaxes(service))
    # Port 0 is bound by the OS to a free port, read back from the socket: no race with
    # another process as there would be when picking a free port first.
    server = ae.start_server(
        (settings.bind, settings.dicom_port), block=False, evt_handlers=handlers
    )
    assert server is not None  # block=False always returns the server
    if settings.dicom_tls:
        serve_tls(server, server_context(settings), settings.tls_handshake_seconds)
    share_uids(server)  # cheap per-association copies of the contexts (see the module)
    dicom = DicomServer(ae, server)
    logger.info(
        "DICOM server %s listening on %s:%d%s (%s)", settings.ae_title, settings.bind,
        dicom.port, " (TLS)" if settings.dicom_tls else "", ", ".join(s.name for s in built),
        extra={"calling_ae": None, "accession": None},
    )
    return dicom


def serve_tls(server: ThreadedAssociationServer, context: ssl.SSLContext,
              handshake_seconds: float) -> None:
    """TLS on the server's connections, with the handshake in each association's own thread.

    pynetdicom's own ``ssl_context`` handshakes in the thread that accepts connections: one
    client that connects and says nothing would stop every other from being accepted. Here
    the accepting thread only wraps the socket; the handshake, bounded by
    ``handshake_seconds``, runs where the association will, and a failed one closes that
    connection alone."""
    listening = server.socket
    assert listening is not None  # bound by start_server

    def get_request() -> tuple[socket.socket, Any]:
        client, address = listening.accept()
        return context.wrap_socket(client, server_side=True,
                                   do_handshake_on_connect=False), address

    finish = server.finish_request

    def finish_request(request: Any, client_address: Any) -> None:
        previous = request.gettimeout()
        request.settimeout(handshake_seconds)
        try:
            request.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; so is a timeout
            logger.warning("DICOM TLS handshake from %s failed: %s", client_address[0],
                           type(exc).__name__, extra={"calling_ae": None, "accession": None})
            request.close()
            return
        request.settimeout(previous)
        finish(request, client_address)

    server.get_request = get_request  # type: ignore[method-assign]
    server.finish_request = finish_request  # type: ignore[method-assign]


def _quiet_pynetdicom() -> None:
    """pynetdicom formats every request identifier and every PDU and DIMSE message for its
    INFO/DEBUG log whether or not the log takes them (0.5 ms and more per C-FIND); when its
    logger is above INFO (the bridge's default, see logging_setup), it need not."""
    verbose = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = verbose
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if verbose else "none"


def _bind_handlers(services: Sequence[DicomService]) -> list[EventHandlerType]:
    """pynetdicom binds one handler per intervention event (C-FIND, C-STORE, ...), the last
    one winning; when two services handle the same event (worklist and query/retrieve both
    answer C-FIND, the grid gateway answers everything called to its own AE title), a
    dispatcher picks the handler by the called AE title and the request's SOP class."""
    routes: dict[Any, list[tuple[DicomService, EventHandlerType]]] = defaultdict(list)
    bound: list[EventHandlerType] = []
    for service in services:
        for handler in service.handlers:
            if handler[0] in evt._INTERVENTION_EVENTS:
                routes[handler[0]].append((service, handler))
            elif service.called_ae:
                bound.append((handler[0], _only_called, [service.called_ae, handler]))
            else:
                bound.append(handler)
    titles = frozenset(s.called_ae for s in services if s.called_ae)
    for event, pairs in routes.items():
        if len(pairs) == 1 and not titles:
            bound.append(pairs[0][1])
            continue
        table = {(service.called_ae, sop_class): handler for service, handler in pairs
                 for sop_class in service.sop_classes}
        bound.append((event, _dispatch, [table, titles]))
    return bound


def called_ae_of(event: Event) -> str:
    primitive = event.assoc.requestor.primitive
    return str(getattr(primitive, "called_ae_title", "") or "").strip()


def _dispatch(event: Event, table: dict[tuple[str | None, str], EventHandlerType],
              titles: frozenset[str], *extra: Any) -> Any:
    called = called_ae_of(event) if titles else ""
    handler = table.get((called if called in titles else None,
                         str(event.context.abstract_syntax)))
    if handler is None:  # not negotiated for this event: the context was accepted elsewhere
        raise LookupError(f"no handler for {event.context.abstract_syntax}")
    arguments = handler[2] if len(handler) > 2 else []
    return handler[1](event, *arguments)


def _only_called(event: Event, title: str, handler: EventHandlerType) -> None:
    """A notification handler of a service with its own AE title (the grid's end of
    association) runs only for associations called to that title."""
    if called_ae_of(event) == title:
        arguments = handler[2] if len(handler) > 2 else []
        handler[1](event, *arguments)


def _syntaxes(service: DicomService) -> list[str] | None:
    return None if service.transfer_syntaxes is None else list(service.transfer_syntaxes)

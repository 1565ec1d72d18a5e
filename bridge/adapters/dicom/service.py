"""What one DICOM service contributes to the server: SOP classes and event handlers.

Services compose: the server is built from a list of them, so storage and query/retrieve
(issue #3) are added by passing more :class:`DicomService` values, without touching the
worklist or MPPS code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pynetdicom.events import EventHandlerType
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings


@dataclass(frozen=True, slots=True)
class DicomService:
    name: str
    #: SOP Class UIDs accepted as SCP, with the default transfer syntaxes.
    sop_classes: tuple[str, ...]
    #: pynetdicom's ``(event, handler)`` or ``(event, handler, [bound arguments])``.
    handlers: tuple[EventHandlerType, ...] = field(default=())
    #: Transfer syntaxes accepted for ``sop_classes`` (None: pynetdicom's defaults).
    transfer_syntaxes: tuple[str, ...] | None = None
    #: SCP/SCU role selection (PS3.7 D.3.3.4): storage classes that C-GET sends back over
    #: the requestor's own association are accepted with the SCU role as well.
    role_selection: bool = False
    #: Only associations called to this AE title reach the service (the grid gateway's own
    #: title); None: the bridge's own title (and any other title not claimed by a service).
    called_ae: str | None = None


#: Builds a service from the application's dependencies.
ServiceFactory = Callable[[Settings, sessionmaker[Session]], DicomService]

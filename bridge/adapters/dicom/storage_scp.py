"""The Storage SCP: every storage SOP class, every usual transfer syntax, kept as received.

pynetdicom is told to receive data sets in chunks straight to a temporary file
(``STORE_RECV_CHUNKED_DATASET``), so a 1 GB object never sits in memory and the pixel data is
never decoded; the handler gives that file to :class:`~bridge.services.archive.store.ArchiveStore`,
which answers only once the file and its index rows are committed. Any failure becomes a
DIMSE failure status with an Error Comment (no patient data in it).

The temporary file is created in the archive's own ``.incoming`` folder rather than the
system's (often a tmpfs: a 1 GB object would sit in RAM, then be copied): on the archive's
file system the store renames it into place, and its data fsync (started as soon as the
handler has it) holds for the file at its archive name.
"""

from __future__ import annotations

import errno
import logging
import tempfile
from pathlib import Path
from typing import IO, Any

from pydicom.dataset import Dataset
from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    dimse_messages,
    evt,
)
from pynetdicom.events import Event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.dimse_status import failure
from bridge.adapters.dicom.service import DicomService
from bridge.config.settings import Settings
from bridge.errors import BridgeError, Transient
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.services.deid.restore import Restorer

logger = logging.getLogger("bridge.dicom")

SUCCESS = 0x0000
#: Every storage SOP class pynetdicom knows (PS3.4 Annex B), as SCP.
STORAGE_SOP_CLASSES = tuple(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


def storage_service(settings: Settings, session_factory: sessionmaker[Session], *,
                    store: ArchiveStore | None = None) -> DicomService:
    """``store``: the application's one archive store, shared with STOW-RS so that both
    intakes group-commit together (their own stores would lock study rows independently)."""
    # Process-wide in pynetdicom; the bridge never needs received data sets in memory.
    _config.STORE_RECV_CHUNKED_DATASET = True
    store = store or ArchiveStore(settings, session_factory)
    receive_into(store.root / ".incoming")
    return DicomService(
        name="storage",
        sop_classes=STORAGE_SOP_CLASSES,
        transfer_syntaxes=tuple(str(ts) for ts in ALL_TRANSFER_SYNTAXES),
        handlers=((evt.EVT_C_STORE, handle_store,
                   [store, Restorer(settings, session_factory)
                    if settings.deid_destinations else None]),),
        # C-GET sends stored objects back over the requestor's own association: the
        # storage classes are offered with the SCU role too (SCP/SCU role selection).
        role_selection=True,
    )


#: Where pynetdicom creates received data sets' temporary files (see the module).
_incoming: list[Path] = []


def receive_into(directory: Path) -> None:
    """Have pynetdicom create its temporary files in ``directory`` (process-wide, as its
    chunked mode is; the last storage service built wins)."""
    directory.mkdir(parents=True, exist_ok=True)
    _incoming[:] = [directory]
    # pynetdicom imports the function by name (``from tempfile import NamedTemporaryFile``);
    # if a later version does not, nothing breaks: files go to the system's folder again.
    if hasattr(dimse_messages, "NamedTemporaryFile"):
        dimse_messages.NamedTemporaryFile = _temporary_file  # type: ignore[assignment]


def _temporary_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    # A folder removed meanwhile (a test's archive): the system's, rather than a refused
    # association.
    if _incoming and _incoming[0].is_dir():
        kwargs.setdefault("dir", _incoming[0])
    return tempfile.NamedTemporaryFile(*args, **kwargs)


def handle_store(event: Event, store: ArchiveStore, restorer: Restorer | None = None
                 ) -> int | Dataset:
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    extra = {"calling_ae": calling_ae, "accession": None}
    try:
        if restorer is not None and calling_ae in restorer.return_aes:
            restored = restorer.restore(Path(event.dataset_path).read_bytes(),
                                        actor=f"ae:{calling_ae}", source="c-store")
            stored = store.accept_bytes(restored.data, calling_ae=calling_ae,
                                        source="deid-return")
        else:
            stored = store.accept(Arrival(event.dataset_path, calling_ae=calling_ae))
    except BridgeError as exc:
        logger.warning("C-STORE refused: %s", exc.message, extra=extra)
        return failure(exc)
    except OperationalError as exc:
        _log_unexpected("C-STORE failed: database unavailable", exc, extra)
        return failure(Transient("archive database unavailable"))
    except OSError as exc:
        _log_unexpected("C-STORE failed: storage error", exc, extra)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        return failure(Transient("archive storage full" if full else "archive storage error"))
    except Exception as exc:  # never let a bad object take the association down
        _log_unexpected("C-STORE failed", exc, extra)
        return failure(exc, default_comment="internal error")
    logger.info("C-STORE %s: %s", stored.outcome, stored.reconciliation, extra=extra)
    return SUCCESS


def _log_unexpected(message: str, exc: BaseException, extra: dict[str, str | None]) -> None:
    """The error's kind at ERROR; its text and traceback only at DEBUG: a database's own
    message can quote the row it refused (patient names and IDs)."""
    logger.error("%s (%s)", message, type(exc).__name__, extra=extra)
    logger.debug("C-STORE failure detail", exc_info=exc, extra=extra)

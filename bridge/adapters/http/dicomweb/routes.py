"""DICOMweb under ``/dicomweb``: QIDO-RS search, WADO-RS retrieve and metadata, STOW-RS store.

The answers hold patient data (and STOW-RS writes into the archive), so every route needs a
token with the integration role, or a clinician's login: a clinician finds and retrieves only
the studies they may see (others answer 404) and what they store is recorded as theirs.
What leaves carries the current MIS values (the database is the truth), as for C-FIND and
C-MOVE; what arrives goes through the same checks, reconciliation and index as a C-STORE.

- :mod:`.dicomweb_qido`: ``GET /studies``, ``/series``, ``/instances`` and the same under a
  study or series.
- :mod:`.dicomweb_wado`: ``GET /studies/{study}[/series/{series}[/instances/{instance}]]``
  (``multipart/related; type="application/dicom"``), ``.../metadata`` (DICOM JSON) and
  ``.../instances/{instance}/bulk/{tag}``.
- :mod:`.dicomweb_stow`: ``POST /studies`` and ``POST /studies/{study}``.
- :mod:`.dicomweb_rendered`: ``GET .../rendered`` and ``.../thumbnail`` of a study, series,
  instance or frame(s): JPEG or PNG images (PS3.18 rendered resources), with the access and
  audit of WADO-RS.

Errors have the API's shape (``{"error", "detail", "location"}``): 400 for a bad parameter
or body, 404 for unknown UIDs, 406 when the ``Accept`` header asks for what we cannot send,
415 for a body that is not ``multipart/related; type="application/dicom"``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from bridge.adapters.http.access import patient_data_reader
from bridge.adapters.http.dicomweb import (
    qido as dicomweb_qido,
)
from bridge.adapters.http.dicomweb import (
    rendered as dicomweb_rendered,
)
from bridge.adapters.http.dicomweb import (
    stow as dicomweb_stow,
)
from bridge.adapters.http.dicomweb import (
    wado as dicomweb_wado,
)

router = APIRouter(
    prefix="/dicomweb",
    tags=["dicomweb"],
    # The token is checked in its own read-only session (see deps.get_current_token); the
    # routes read in their own read-only sessions, closed before a response streams.
    dependencies=[Depends(patient_data_reader("integration"))],
)
router.include_router(dicomweb_qido.router)
router.include_router(dicomweb_wado.router)
router.include_router(dicomweb_stow.router)
router.include_router(dicomweb_rendered.router)

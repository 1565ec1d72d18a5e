"""OperationOutcome answers: every error under ``/fhir`` is one, with the right HTTP status.

The bridge's error kinds (:mod:`bridge.errors`) keep their HTTP status (400 Rejected, 422
MappingFailed, 404 NotFound, 409 Conflict, 503 Transient, 500 anything else); FHIR needs a
few more, defined here as subclasses so the rest of the bridge still answers them sensibly:
412 (:class:`PreconditionFailed`, a failed ``If-Match`` or an ambiguous conditional
interaction), 405 (:class:`NotAllowed`), 406/415 (:class:`UnsupportedFormat`), 413
(:class:`TooCostly`).
"""

from __future__ import annotations

import re
from typing import Any

from bridge.errors import (
    BridgeError,
    Conflict,
    Forbidden,
    MappingFailed,
    NotFound,
    Rejected,
    Transient,
)


class PreconditionFailed(Conflict):
    """``If-Match`` names another version, or a conditional interaction matched several."""


class NotAllowed(Rejected):
    """The interaction is not supported on this resource (HTTP 405)."""


class UnsupportedFormat(Rejected):
    """A body or answer format other than FHIR JSON (HTTP 415, or 406 for ``Accept``)."""

    def __init__(self, message: str, *, status: int = 415) -> None:
        super().__init__(message)
        self.status = status


class TooCostly(Rejected):
    """More work in one request than the bridge takes at once (HTTP 413)."""


class InvalidCode(MappingFailed):
    """A code the bridge acts on has no mapping (HTTP 422, issue type ``code-invalid``)."""


class InvalidReference(MappingFailed):
    """A reference names nothing the bridge knows (HTTP 422, issue type ``not-found``)."""


#: (HTTP status, OperationOutcome issue type) per error kind, most specific first.
_ANSWERS: tuple[tuple[type[BaseException], int, str], ...] = (
    (PreconditionFailed, 412, "conflict"),
    (NotAllowed, 405, "not-supported"),
    (TooCostly, 413, "too-costly"),
    (InvalidCode, 422, "code-invalid"),
    (InvalidReference, 422, "not-found"),
    (MappingFailed, 422, "invalid"),
    (Rejected, 400, "structure"),
    (NotFound, 404, "not-found"),
    (Conflict, 409, "conflict"),
    (Forbidden, 403, "forbidden"),
    (Transient, 503, "transient"),
    (BridgeError, 500, "exception"),
)


def status_and_code(error: BaseException) -> tuple[int, str]:
    """The HTTP status and issue type for any exception (unknown ones: 500 ``exception``)."""
    if isinstance(error, UnsupportedFormat):
        return error.status, "not-supported"
    for kind, status, code in _ANSWERS:
        if isinstance(error, kind):
            return status, code
    return 500, "exception"


#: A FHIRPath to an element (``ServiceRequest.identifier[0].value``); other locations (an
#: HTTP header, an HL7 field) are left out of ``expression``.
_FHIRPATH = re.compile(r"^[A-Z][A-Za-z]*(\[\d+\])?(\.[A-Za-z_]\w*(\[\d+\])?)*$")


def operation_outcome(severity: str, code: str, diagnostics: str,
                      expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression and _FHIRPATH.match(expression):
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_for(error: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and OperationOutcome answering ``error``.

    A :class:`BridgeError`'s message and location are meant for the sender; anything else is
    an internal error whose text is not shown (it may quote patient data).
    """
    status, code = status_and_code(error)
    if isinstance(error, BridgeError):
        severity = "fatal" if status >= 500 else "error"
        return status, operation_outcome(severity, code, error.message, error.location)
    return status, operation_outcome("fatal", code, "internal error")


def information(diagnostics: str) -> dict[str, Any]:
    """An OperationOutcome that reports success (batch entries, ``Prefer: return=...``)."""
    return operation_outcome("information", "informational", diagnostics)

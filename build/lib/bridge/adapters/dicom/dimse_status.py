"""Bridge errors → DIMSE status datasets, in one place for every DICOM handler."""

from __future__ import annotations

from pydicom.dataset import Dataset

from bridge.errors import answer_for

#: Error Comment is LO: at most 64 characters.
_COMMENT_MAX = 64


def failure(error: BaseException, *, default_comment: str | None = None) -> Dataset:
    """A status dataset for ``error``: its own ``dimse_status`` when it carries one (MPPS),
    else the one :data:`bridge.errors.ANSWERS` gives its kind (unknown → 0xC000)."""
    code = getattr(error, "dimse_status", None)
    status = Dataset()
    status.Status = code if isinstance(code, int) else answer_for(error).dimse_status
    comment = default_comment or str(error) or type(error).__name__
    status.ErrorComment = _ascii(comment)[:_COMMENT_MAX]
    return status


def _ascii(text: str) -> str:
    # The status is encoded without a character set: keep it to the default repertoire.
    return text.encode("ascii", "replace").decode("ascii")

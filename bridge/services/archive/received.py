"""Reading a received Part 10 file before anything of it is kept.

:func:`read_received` parses the whole file structure without loading large values (pixel
data is skipped, not read), so a truncated or malformed object is refused before anything is
kept. Placing the file durably is :mod:`bridge.storage.durable`'s work.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from bridge.errors import Rejected

#: Values longer than this are left on disk while parsing (pixel data, large blobs).
_DEFER_BYTES = 8192


class UnreadableObject(Rejected):
    """The bytes are not a complete DICOM data set."""

    dimse_status = 0xC000  # Cannot understand


def read_received(path: Path) -> tuple[Dataset, str]:
    """The parsed header (large values deferred) and its transfer syntax UID."""
    size = path.stat().st_size
    try:
        dataset = dcmread(path, defer_size=_DEFER_BYTES)
        transfer_syntax = str(dataset.file_meta.TransferSyntaxUID)
        for tag in list(dataset.keys()):
            element = dataset.get_item(tag, keep_deferred=True)
            # Every value must lie inside the file: pydicom reads a short value without
            # complaint, and skips a deferred one, so a truncated object would otherwise
            # be found only when someone retrieves it.
            if (isinstance(element, RawDataElement) and element.length != 0xFFFFFFFF
                    and element.value_tell + element.length > size):
                raise UnreadableObject(
                        f"data set truncated: element {tag} runs past the end of the data",
                        location=str(tag))
    except UnreadableObject:
        raise
    except (InvalidDicomError, EOFError, ValueError, struct.error, AttributeError,
            KeyError, OSError, NotImplementedError) as exc:
        raise UnreadableObject(f"not a readable DICOM data set: {type(exc).__name__}") from None
    if not len(dataset):
        raise UnreadableObject("empty data set")
    return dataset, transfer_syntax

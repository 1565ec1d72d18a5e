"""Legacy modality import: DICOM files and plain images from folders into the archive.

- :mod:`.scan` walks folders and tells settled files from files still being written;
- :mod:`.classify` tells DICOM (with or without a Part 10 header), images and sidecars apart
  by their first bytes;
- :mod:`.dicom_files` reads DICOMDIR sets and wraps bare data sets in a Part 10 header;
- :mod:`.secondary_capture` and :mod:`.image_values` turn images into Secondary Capture
  objects with metadata from sidecars, file names (``mappings/import``) and the MIS;
- :mod:`.processed` is the list of processed files, so nothing is imported twice;
- :mod:`.importer` runs an import through the archive store, :mod:`.watch` schedules it.

Source files are never moved, changed or deleted.
"""

from bridge.services.legacy_import.importer import (
    CHANGING,
    FAILED,
    METADATA,
    FileOutcome,
    Importer,
    ImportOptions,
    ImportReport,
)
from bridge.services.legacy_import.scan import FileVersion, StabilityFilter, walk
from bridge.services.legacy_import.setup import CLI_SOURCE, build_importer
from bridge.services.legacy_import.watch import FolderWatch, schedule_legacy_import

__all__ = ["CHANGING", "CLI_SOURCE", "FAILED", "METADATA", "FileOutcome", "FileVersion",
           "FolderWatch", "ImportOptions", "ImportReport", "Importer", "StabilityFilter",
           "build_importer", "schedule_legacy_import", "walk"]

"""The DICOM values of one plain image: its sidecar files, its name, the MIS, defaults.

Precedence per attribute (first with a value wins): the image's own sidecar, the folder's
sidecar, the file-name pattern, the MIS (order by accession, else patient by ID), the
table's defaults. Values are normalised and checked by :mod:`bridge.mapping.legacy_import.metadata`
(a bad one rejects the file), transliterated when the source asks for it, and completed with
the study and series UIDs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from bridge.mapping.legacy_import.metadata import (
    ImportMapping,
    MetadataError,
    decode_sidecar,
    normalise,
    parse_sidecar,
    transliterated,
    values_from_fields,
    values_from_path,
)
from bridge.mapping.translit import Language
from bridge.services.legacy_import.mis_values import MisValues

#: Sidecar files larger than this are not metadata (a misnamed image, a log).
_MAX_SIDECAR_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ImageValues:
    mapping: ImportMapping
    mis: MisValues | None
    uid_root: str
    transliterate: bool
    language: Language

    def for_image(self, path: Path, parts: tuple[str, ...], folders: FolderFiles
                  ) -> dict[str, str]:
        """``parts``: the path components below the import root, file name last (what the
        patterns match). Raises :class:`MetadataError` for an unusable value."""
        found: dict[str, str] = {}
        own = folders.sidecar_for(path, self.mapping)
        if own is not None:
            _add(found, values_from_fields(own, self.mapping))
        shared = folders.folder_sidecar(path.parent, self.mapping)
        if shared is not None:
            _add(found, values_from_fields(shared, self.mapping))
        from_name = values_from_path(parts, self.mapping)
        if from_name is not None:
            _add(found, from_name)
        values = normalise(found, self.mapping)
        if self.mis is not None:
            values = self.mis.fill(values)
        for keyword, value in normalise(self.mapping.defaults, self.mapping).items():
            if not values.get(keyword):
                values[keyword] = value
        if self.transliterate:
            values = transliterated(values, self.language)
        values = {k: v for k, v in values.items() if v}
        if not values.get("StudyInstanceUID"):
            values["StudyInstanceUID"] = self._derived("legacy-study", _study_key(values, path))
        values["SeriesInstanceUID"] = self._derived(
            "legacy-series", (values["StudyInstanceUID"], values.get("Modality", ""),
                              values.get("SeriesNumber", "")))
        return values

    def _derived(self, kind: str, key: tuple[str, ...]) -> str:
        return str(generate_uid(prefix=f"{self.uid_root}.", entropy_srcs=[kind, *key]))


def _add(found: dict[str, str], values: dict[str, str]) -> None:
    for keyword, value in values.items():
        found.setdefault(keyword, value)


def _study_key(values: dict[str, str], path: Path) -> tuple[str, ...]:
    """Images of one patient with one accession (or date) are one study; without either,
    the images of one folder are."""
    identity = (values.get("PatientID", ""), values.get("AccessionNumber", ""),
                values.get("StudyDate", ""))
    if any(identity[1:]):
        return identity
    return (*identity, str(path.parent))


class FolderFiles:
    """The sidecars of each folder, listed and parsed once per run."""

    def __init__(self) -> None:
        self._names: dict[Path, dict[str, Path]] = {}
        self._parsed: dict[Path, dict[str, str] | None] = {}
        self._lock = threading.Lock()

    def sidecar_for(self, image: Path, mapping: ImportMapping) -> dict[str, str] | None:
        names = self._listing(image.parent)
        stem = image.stem.casefold()
        for extension in mapping.sidecar_extensions:
            found = names.get(f"{stem}.{extension}")
            if found is not None:
                return self._parse(found, extension, mapping)
        return None

    def folder_sidecar(self, folder: Path, mapping: ImportMapping) -> dict[str, str] | None:
        names = self._listing(folder)
        for name in mapping.folder_files:
            found = names.get(name)
            if found is not None:
                return self._parse(found, name.rpartition(".")[2], mapping)
        return None

    def _listing(self, folder: Path) -> dict[str, Path]:
        with self._lock:
            if folder not in self._names:
                try:
                    self._names[folder] = {p.name.casefold(): p for p in folder.iterdir()
                                           if p.is_file()}
                except OSError:
                    self._names[folder] = {}
            return self._names[folder]

    def _parse(self, path: Path, kind: str, mapping: ImportMapping) -> dict[str, str] | None:
        with self._lock:
            if path in self._parsed:
                return self._parsed[path]
        try:
            if path.stat().st_size > _MAX_SIDECAR_BYTES:
                raise MetadataError("sidecar file too large to be metadata")
            text = decode_sidecar(path.read_bytes(), mapping.encodings)
        except OSError:
            raise MetadataError("sidecar file unreadable") from None
        parsed = parse_sidecar(text, kind)
        with self._lock:
            self._parsed[path] = parsed
        return parsed

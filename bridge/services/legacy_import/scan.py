"""Finding the files of an import: a folder walk, and the stability check for watched
folders (a file still being copied must not be read half-written)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: The name a DICOM File-set's directory must have (PS3.10 8.6).
DICOMDIR = "DICOMDIR"


@dataclass(frozen=True, slots=True)
class FileVersion:
    """A file as seen at one moment: a changed size or mtime is another version."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (str(self.path), self.size, self.mtime_ns)


def observe(path: Path) -> FileVersion | None:
    """The file's current version; None when it is gone or not a regular file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return FileVersion(path, stat.st_size, stat.st_mtime_ns)


def walk(roots: Iterable[Path], *, skip: Iterable[Path] = ()) -> Iterator[FileVersion]:
    """Every regular file under ``roots`` (a root may be a file), DICOMDIRs of a folder
    first so their referenced files are imported as members of the set. Hidden files and
    folders are left out (``.incoming``, editors' temporaries), and so are ``skip`` folders
    (the archive itself, when a source lies above it). Folder symlinks are not followed
    (no loops); file symlinks are."""
    skipped = {p.resolve() for p in skip}
    for root in roots:
        root = Path(os.path.abspath(root))
        if root.is_file():
            version = observe(root)
            if version is not None:
                yield version
            continue
        yield from _walk_folder(root, skipped)


def _walk_folder(folder: Path, skipped: set[Path]) -> Iterator[FileVersion]:
    if folder.resolve() in skipped:
        return
    try:
        with os.scandir(folder) as entries:
            listed = sorted(entries, key=lambda e: (e.name.upper() != DICOMDIR, e.name))
    except OSError:  # unreadable folder: nothing to import from it now
        return
    folders = []
    for entry in listed:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            elif entry.is_file():
                stat = entry.stat()
                yield FileVersion(Path(entry.path), stat.st_size, stat.st_mtime_ns)
        except OSError:
            continue
    for sub in folders:
        yield from _walk_folder(sub, skipped)


class StabilityFilter:
    """Passes a file only once it has been seen twice with the same size and mtime.

    A modality (or a copy over the network) writes a file over seconds or minutes; reading
    it then would reject a good file as truncated, or worse, archive half an image. Memory
    is per source and process: after a restart the first scan only observes.
    """

    def __init__(self) -> None:
        self._previous: dict[Path, tuple[int, int]] = {}

    def stable(self, versions: Iterable[FileVersion]) -> list[FileVersion]:
        current: dict[Path, tuple[int, int]] = {}
        stable = []
        for version in versions:
            current[version.path] = (version.size, version.mtime_ns)
            if self._previous.get(version.path) == (version.size, version.mtime_ns):
                stable.append(version)
        self._previous = current
        return stable

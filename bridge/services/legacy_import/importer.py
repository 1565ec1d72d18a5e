"""One import run: files in, objects into the archive, a row per file in the processed list.

Every object goes through :class:`~bridge.services.archive.store.ArchiveStore`, exactly as a
C-STORE does: the same parsing and refusal of bad data, reconciliation with the MIS,
duplicate policy, and durability (file fsync'ed and indexed before the import counts).

The source files are only ever read: never moved, renamed or deleted, whatever happens to
them. A bad file is recorded as ``rejected`` with the reason, and left where it is for the
operator; it is looked at again only when it changes. A passing fault (database or archive
disk unavailable) records nothing, so the next run tries the file again.

Logs name the source and the reason, never the path (file names of legacy exports often
carry the patient's name); the path is in the processed list and at DEBUG.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pydicom.uid import MediaStorageDirectoryStorage
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from bridge.errors import BridgeError, Transient
from bridge.mapping.legacy_import.metadata import ImportMapping, MetadataError
from bridge.mapping.translit import Language
from bridge.services.archive.received import read_received
from bridge.services.archive.store import ArchiveStore, Arrival, DuplicateInstance, Stored
from bridge.services.legacy_import.classify import IMAGE_KINDS, Kind, classify
from bridge.services.legacy_import.dicom_files import (
    BadDicomFile,
    bare_to_part10,
    dicomdir_members,
)
from bridge.services.legacy_import.image_values import FolderFiles, ImageValues
from bridge.services.legacy_import.mis_values import MisValues
from bridge.services.legacy_import.processed import ProcessedList, Record
from bridge.services.legacy_import.scan import DICOMDIR, FileVersion, observe
from bridge.services.legacy_import.secondary_capture import (
    image_pixels,
    instance_uid,
    secondary_capture,
)
from bridge.storage.durable import remove_file
from bridge.store.import_models import DIRECTORY, DUPLICATE, IMPORTED, REJECTED

logger = logging.getLogger("bridge.import")

#: Outcomes that write no row: a passing fault (tried again), metadata files, and files
#: that changed while being read or vanished (looked at again when they settle).
FAILED, METADATA, CHANGING = "failed", "metadata", "changing"
_HASH_CHUNK = 1 << 20
_FLUSH_EVERY = 64


@dataclass(frozen=True, slots=True)
class ImportOptions:
    mapping: ImportMapping
    #: The source's name in the processed list (``cli`` for an ad-hoc import).
    source: str = "cli"
    calling_ae: str = ""
    transliterate: bool = False
    language: Language = "uk"
    #: Look at everything and report, but store and record nothing.
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class FileOutcome:
    path: Path
    status: str
    reason: str | None = None
    objects: int = 0
    size: int = 0
    #: The studies the file's objects went into (``studies.id``), when stored.
    study_ids: tuple[int, ...] = ()


@dataclass
class ImportReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    #: Files skipped because the processed list has their version already.
    already_processed: int = 0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def with_status(self, *statuses: str) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status in statuses]


@dataclass(frozen=True, slots=True)
class _Task:
    version: FileVersion
    #: Named by a DICOMDIR: imported as a member of the set.
    member: bool = False


class Importer:
    def __init__(self, store: ArchiveStore, processed: ProcessedList,
                 options: ImportOptions, *, uid_root: str, workers: int = 4,
                 mis: MisValues | None = None) -> None:
        #: Also used by a dry run: its ``.incoming`` folder holds conversions being checked.
        self.store = store
        self.processed = processed
        self.options = options
        self.workers = workers
        self.images = ImageValues(options.mapping, mis, uid_root, options.transliterate,
                                  options.language)
        self.uid_root = uid_root
        self._folders = FolderFiles()
        self._claimed: dict[str, Path] = {}
        self._claim_lock = threading.Lock()

    # -- a run ------------------------------------------------------------------------------

    def run(self, versions: Iterable[FileVersion],
            progress: Callable[[FileOutcome], None] | None = None) -> ImportReport:
        """Import ``versions`` (from :func:`~bridge.services.legacy_import.scan.walk`)."""
        report = ImportReport()
        listed = list(versions)
        seen = self.processed.seen(listed)
        fresh = [v for v in listed if v.key not in seen]
        report.already_processed = len(listed) - len(fresh)
        tasks, directories = self._expand_dicomdirs(fresh, seen)
        pending: list[Record] = []

        def finish(outcome: FileOutcome, record: Record | None) -> None:
            report.outcomes.append(outcome)
            if record is not None and not self.options.dry_run:
                pending.append(record)
                if len(pending) >= _FLUSH_EVERY:
                    self.processed.record(pending)
                    pending.clear()
            if progress is not None:
                progress(outcome)

        for outcome, record in directories.rejected:
            finish(outcome, record)
        with ThreadPoolExecutor(max_workers=self.workers,
                                thread_name_prefix="import") as pool:
            for outcome, record in pool.map(self._process, tasks):
                finish(outcome, record)
        for outcome, record in directories.done:
            finish(outcome, record)
        if not self.options.dry_run:
            self.processed.record(pending)
        return report

    def _expand_dicomdirs(self, versions: list[FileVersion], seen: set[tuple[str, int, int]]
                          ) -> tuple[list[_Task], _Directories]:
        """DICOMDIRs replaced by the files they reference (which the walk may list too)."""
        directories = _Directories()
        members: dict[Path, _Task] = {}
        plain: list[FileVersion] = []
        for version in versions:
            if version.path.name.upper() != DICOMDIR:
                plain.append(version)
                continue
            try:
                referenced = dicomdir_members(version.path)
            except BadDicomFile as exc:
                directories.reject(version, self.options.source, exc.message)
                continue
            except OSError as exc:
                directories.reject(version, self.options.source,
                                   f"unreadable source file ({type(exc).__name__})")
                continue
            if referenced is None:
                plain.append(version)
                continue
            missing = 0
            for path in referenced:
                member = observe(path)
                if member is None:
                    missing += 1
                    directories.reject(FileVersion(path, 0, 0), self.options.source,
                                       "referenced by a DICOMDIR but missing")
                elif member.key not in seen:
                    members.setdefault(member.path, _Task(member, member=True))
            directories.directory(version, self.options.source,
                                  f"DICOMDIR referencing {len(referenced)} files"
                                  + (f", {missing} missing" if missing else ""))
        tasks = list(members.values())
        tasks.extend(_Task(v) for v in plain if v.path not in members)
        return tasks, directories

    # -- one file ---------------------------------------------------------------------------

    def _process(self, task: _Task) -> tuple[FileOutcome, Record | None]:
        version = task.version
        try:
            return self._process_file(task)
        except Exception as exc:  # one file's surprise never stops the run
            logger.error("legacy import %s: a file failed unexpectedly (%s)",
                         self.options.source, type(exc).__name__)
            logger.debug("legacy import failure detail: %s", version.path, exc_info=exc)
            return self._rejected(version, f"internal error ({type(exc).__name__})", None)

    def _process_file(self, task: _Task) -> tuple[FileOutcome, Record | None]:
        version = task.version
        try:
            kind = classify(version.path, self.options.mapping)
            if kind is Kind.SIDECAR:
                return FileOutcome(version.path, METADATA, size=version.size), None
            data = version.path.read_bytes() if kind in IMAGE_KINDS else None
            sha256 = hashlib.sha256(data).hexdigest() if data is not None else _sha256(
                version.path)
        except FileNotFoundError:
            return FileOutcome(version.path, CHANGING, "vanished", size=version.size), None
        except OSError as exc:
            return self._rejected(version, f"unreadable source file ({type(exc).__name__})",
                                  None)
        if observe(version.path) != version:  # still being written: next scan
            return FileOutcome(version.path, CHANGING, "changed while read",
                               size=version.size), None
        duplicate = self._duplicate_of(sha256, version.path)
        if duplicate is not None:
            return self._outcome(version, DUPLICATE, duplicate, sha256)
        try:
            if kind is Kind.DICOM:
                return self._dicom(version, sha256)
            if kind is Kind.DICOM_RAW:
                return self._bare_dicom(version, sha256)
            if data is not None:
                return self._image(version, kind, data, sha256)
            return self._rejected(version, "not DICOM and not a supported image "
                                  "(JPEG, PNG, BMP, TIFF)", sha256)
        except DuplicateInstance:  # the archive's duplicate policy is "reject"
            return self._outcome(version, DUPLICATE, "SOP Instance UID already in the "
                                 "archive", sha256)
        except Transient as exc:
            return self._failed(version, exc.message)
        except (BridgeError, MetadataError) as exc:
            reason = exc.message if isinstance(exc, BridgeError) else str(exc)
            return self._rejected(version, reason, sha256)
        except (OperationalError, SQLAlchemyError):
            return self._failed(version, "archive database unavailable")
        except OSError as exc:
            return self._failed(version, f"archive storage error ({type(exc).__name__})")

    def _duplicate_of(self, sha256: str, path: Path) -> str | None:
        with self._claim_lock:
            first = self._claimed.setdefault(sha256, path)
        if first != path:
            return "same content as another file of this import"
        row = self.processed.imported_with(sha256)
        if row is not None:
            return f"same content as an imported file (processed list #{row})"
        return None

    def _dicom(self, version: FileVersion, sha256: str) -> tuple[FileOutcome, Record | None]:
        meta_class = _media_storage_class(version.path)
        if meta_class == MediaStorageDirectoryStorage:
            return self._outcome(version, DIRECTORY, "a DICOMDIR not named DICOMDIR: its "
                                 "files are imported as they are found", sha256)
        if self.options.dry_run:
            read_received(version.path)
            return self._would_import(version, 1)
        stored = self.store.accept(Arrival(version.path, calling_ae=self.options.calling_ae,
                                           source="import", disposable=False))
        return self._stored(version, [stored], sha256)

    def _bare_dicom(self, version: FileVersion, sha256: str
                    ) -> tuple[FileOutcome, Record | None]:
        temporary = self._temporary()
        try:
            bare_to_part10(version.path, temporary)
            if self.options.dry_run:
                read_received(temporary)
                return self._would_import(version, 1)
            stored = self.store.accept(Arrival(temporary, calling_ae=self.options.calling_ae,
                                               source="import", disposable=True))
        finally:
            remove_file(temporary)
        return self._stored(version, [stored], sha256)

    def _image(self, version: FileVersion, kind: Kind, data: bytes, sha256: str
               ) -> tuple[FileOutcome, Record | None]:
        values = self.images.for_image(version.path, version.path.parts, self._folders)
        pixels = image_pixels(data, kind)
        now = datetime.now()
        given = values.get("InstanceNumber")
        results: list[Stored] = []
        for page, page_pixels in enumerate(pixels):
            page_values = dict(values)
            if given or len(pixels) > 1:  # else empty (Type 2): no number was given
                page_values["InstanceNumber"] = str(int(given or "1") + page)
            dataset = secondary_capture(
                page_pixels, page_values, sop_instance_uid=instance_uid(self.uid_root, sha256,
                                                                        page),
                source_kind=kind, now=now)
            temporary = self._temporary()
            try:
                dataset.save_as(temporary, enforce_file_format=True)
                if self.options.dry_run:
                    read_received(temporary)
                    continue
                results.append(self.store.accept(Arrival(
                    temporary, calling_ae=self.options.calling_ae, source="import",
                    disposable=True)))
            finally:
                remove_file(temporary)
        if self.options.dry_run:
            return self._would_import(version, len(pixels))
        return self._stored(version, results, sha256)

    # -- outcomes ---------------------------------------------------------------------------

    def _temporary(self) -> Path:
        incoming = self.store.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        return incoming / f"import-{secrets.token_hex(8)}.dcm"

    def _stored(self, version: FileVersion, results: list[Stored], sha256: str
                ) -> tuple[FileOutcome, Record | None]:
        new = [r for r in results if r.outcome != "duplicate"]
        if not new:
            return self._outcome(version, DUPLICATE, "SOP Instance UID already in the archive",
                                 sha256, uid=results[0].sop_instance_uid if results else None,
                                 objects=len(results))
        outcome, record = self._outcome(version, IMPORTED, None, sha256,
                                        uid=new[0].sop_instance_uid, objects=len(new))
        return replace(outcome, study_ids=tuple(sorted({r.study_id for r in new}))), record

    def _would_import(self, version: FileVersion, objects: int
                      ) -> tuple[FileOutcome, Record | None]:
        return FileOutcome(version.path, IMPORTED, "dry run: would import", objects,
                           version.size), None

    def _outcome(self, version: FileVersion, status: str, reason: str | None, sha256: str,
                 *, uid: str | None = None, objects: int = 0
                 ) -> tuple[FileOutcome, Record | None]:
        if status != IMPORTED:
            logger.info("legacy import %s: file %s: %s (content %s)", self.options.source,
                        status, reason, sha256[:12])
        logger.debug("legacy import %s: %s is %s", self.options.source, version.path, status)
        return (FileOutcome(version.path, status, reason, objects, version.size),
                Record(version, self.options.source, status, reason, sha256, uid, objects))

    def _rejected(self, version: FileVersion, reason: str, sha256: str | None
                  ) -> tuple[FileOutcome, Record | None]:
        logger.warning("legacy import %s: file rejected and left in place: %s",
                       self.options.source, reason)
        logger.debug("legacy import %s: rejected %s", self.options.source, version.path)
        return (FileOutcome(version.path, REJECTED, reason, 0, version.size),
                Record(version, self.options.source, REJECTED, reason, sha256))

    def _failed(self, version: FileVersion, reason: str) -> tuple[FileOutcome, Record | None]:
        logger.error("legacy import %s: a file was not imported, tried again later: %s",
                     self.options.source, reason)
        with self._claim_lock:  # a retry in this process must not see it as a duplicate
            self._claimed = {k: p for k, p in self._claimed.items() if p != version.path}
        return FileOutcome(version.path, FAILED, reason, 0, version.size), None


@dataclass
class _Directories:
    """DICOMDIR rows, recorded after their members (a crash in between re-reads the set)."""

    done: list[tuple[FileOutcome, Record | None]] = field(default_factory=list)
    rejected: list[tuple[FileOutcome, Record | None]] = field(default_factory=list)

    def directory(self, version: FileVersion, source: str, reason: str) -> None:
        self.done.append((FileOutcome(version.path, DIRECTORY, reason, 0, version.size),
                          Record(version, source, DIRECTORY, reason)))

    def reject(self, version: FileVersion, source: str, reason: str) -> None:
        logger.warning("legacy import %s: file rejected and left in place: %s", source, reason)
        self.rejected.append((FileOutcome(version.path, REJECTED, reason, 0, version.size),
                              Record(version, source, REJECTED, reason)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _media_storage_class(path: Path) -> str:
    try:
        return str(read_file_meta_info(path).get("MediaStorageSOPClassUID", ""))
    except Exception:  # the archive's own parsing gives the precise reason
        return ""

"""Reading an instance's bytes from the nearest intact copy, for every way out (C-MOVE,
C-GET, WADO-RS, forwarding).

:meth:`InstanceReader.local_path` answers with a local file whose SHA-256 matched
``instances.sha256``:

1. the online file (``archive_root / instances.path``) when present and intact;
2. else the long-term copy, fetched and checked: written back to the online tier with
   ``recall_on_retrieve`` (temporary file, fsync, rename; then ``instances.online_removed_at``
   and, once the study is whole again, ``studies.online_removed_at`` are cleared), or else
   into a cache under ``data_dir/longterm-cache`` (pruned by age).

A copy found missing or corrupt is reported: a WARNING without patient data (instance id,
tier, what was wrong), ``bridge_storage_bad_copies_total{tier,problem}``, and for a
long-term copy ``failed_at``/``failure`` on its row (``verified_at`` cleared, and the study's
``longterm_at`` too, so cleanup keeps the online file and the migration copies it again).
An online file that cleanup removed on purpose (``online_removed_at``) is not a fault.

Errors keep the meaning egress already gives file errors: :class:`NoIntactCopy` is a
``FileNotFoundError`` (permanent: no copy anywhere is intact), :class:`LongtermUnreachable`
an ``OSError`` (transient: the long-term store is down; try again later).

Cost: the check reads and hashes the online file (hashlib's SHA-256 runs at about 1 GB/s
here, 0.5 ms for a 0.5 MB CT slice) before egress reads it again from the page cache. A file
verified recently (same inode, size and mtime, within ``VERIFIED_TTL_SECONDS``) is not hashed
again: archive files are never rewritten in place (a replacement is a new file renamed in),
so only silent corruption inside that window would go unnoticed until the entry expires.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import NotFound
from bridge.storage.blobs.factory import open_longterm_store, open_store
from bridge.storage.blobs.protocol import BlobMissing, BlobStore, BlobStoreError, StoreUnavailable
from bridge.storage.durable import fsync_dir, sha256_of
from bridge.store.archive_models import Instance, Study
from bridge.store.models import table_of, utcnow
from bridge.store.storage_models import LONGTERM, ONLINE, InstanceCopy

log = logging.getLogger("bridge.storage")

S = table_of(Study)
I = table_of(Instance)  # noqa: E741
C = table_of(InstanceCopy)

T = TypeVar("T")

#: A file verified this recently (and unchanged on disk) is not hashed again.
VERIFIED_TTL_SECONDS = 300.0
_VERIFIED_MAX = 100_000
#: Instances fetched ahead of the one being sent (C-MOVE/C-GET of a study).
LOOKAHEAD = 8
#: Cached long-term reads (without recall) older than this are pruned.
CACHE_MAX_AGE_SECONDS = 86400.0
CACHE_DIR = "longterm-cache"


class NoIntactCopy(FileNotFoundError):
    """No copy of the instance is present and intact (online, long-term)."""


class LongtermUnreachable(OSError):
    """The online copy is not usable and the long-term store cannot be reached now."""


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """What reading needs of an instance."""

    id: int
    study_id: int
    path: str
    #: Empty when the caller's row lacks it (read from the index then).
    sha256: str = ""


def ref_of(instance: Any) -> InstanceRef:
    """From an ORM ``Instance`` row, a :class:`~bridge.services.archive.query.StoredInstance`
    (``pk``/``study_pk``), or an :class:`InstanceRef`."""
    if isinstance(instance, InstanceRef):
        return instance
    if hasattr(instance, "pk"):
        return InstanceRef(int(instance.pk), int(instance.study_pk), str(instance.path),
                           str(getattr(instance, "sha256", "") or ""))
    return InstanceRef(int(instance.id), int(instance.study_id), str(instance.path),
                       str(getattr(instance, "sha256", "") or ""))


@dataclass(frozen=True, slots=True)
class ReaderMetrics:
    bad_copies: Counter
    longterm_reads: Counter

    @classmethod
    def of(cls, registry: CollectorRegistry | None) -> ReaderMetrics:
        key = registry if registry is not None else _PRIVATE
        found = _METRICS.get(key)
        if found is None:
            found = cls(
                bad_copies=Counter(
                    "bridge_storage_bad_copies",
                    "Copies found missing or corrupt (checksum) when read, by tier and "
                    "problem; the next copy was used.", ["tier", "problem"], registry=key),
                longterm_reads=Counter(
                    "bridge_storage_longterm_reads",
                    "Instances served from the long-term tier, by where they were put "
                    "(recall: back online; cache: the read cache).", ["mode"], registry=key),
            )
            _METRICS[key] = found
        return found


_PRIVATE = CollectorRegistry()
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, ReaderMetrics] = (
    weakref.WeakKeyDictionary())


class InstanceReader:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 store: BlobStore | None, *, metrics: CollectorRegistry | None = None,
                 workers: int = 4) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.metrics = ReaderMetrics.of(metrics)
        self.recall = settings.recall_on_retrieve
        self.cache_root = settings.data_dir / CACHE_DIR
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._stores: dict[str, BlobStore] = {store.location: store} if store else {}
        self._verified: OrderedDict[tuple[str, int, int, int], float] = OrderedDict()
        self._verified_lock = threading.Lock()

    # -- the public calls ----------------------------------------------------------------

    def local_path(self, instance: Any, *, verify_online: bool = True) -> Path:
        """A local file with the instance's bytes, checked against its checksum.
        ``verify_online=False`` trusts a present online file without hashing it (for
        header-only reads such as WADO-RS metadata); long-term copies are always checked."""
        ref = ref_of(instance)
        online = self.settings.archive_root / ref.path
        sha256 = ref.sha256 or self._sha256_of(ref.id)
        problem = self._online_problem(online, sha256, verify_online)
        if problem is None:
            return online
        removed = problem == "missing" and self._removed_on_purpose(ref.id)
        if not removed:
            self._report(ref, ONLINE, problem, f"online file {problem}")
        if not self.recall:
            cached = self.cache_root / ref.path
            if self._online_problem(cached, sha256, True) is None:
                with contextlib.suppress(OSError):
                    os.utime(cached)  # recently used: kept by the pruning
                return cached
        return self._from_longterm(ref, sha256, online)

    def local_paths(self, instances: Sequence[T], *, verify_online: bool = True,
                    lookahead: int = LOOKAHEAD) -> Generator[tuple[T, Future[Path]]]:
        """Each instance with its local path, in order, fetched ``lookahead`` ahead in
        threads (a study held only in long-term storage arrives concurrently while the
        first objects are sent). ``future.result()`` raises what :meth:`local_path` would.
        Closing the iterator early cancels what was not started."""
        pool = self._executor()
        ahead: list[Future[Path]] = []
        try:
            for index, instance in enumerate(instances):
                while len(ahead) <= lookahead and index + len(ahead) < len(instances):
                    nxt = instances[index + len(ahead)]
                    ahead.append(pool.submit(self.local_path, nxt,
                                             verify_online=verify_online))
                yield instance, ahead.pop(0)
        finally:
            for future in ahead:
                future.cancel()

    def all_local_paths(self, instances: Sequence[Any], *,
                        verify_online: bool = True) -> list[Path]:
        """Every instance's local path (concurrently); raises the first error, after every
        fetch ended (so a partial recall is not left running)."""
        pool = self._executor()
        futures = [pool.submit(self.local_path, i, verify_online=verify_online)
                   for i in instances]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def recall_study(self, study_id: int) -> int:
        """Bring every instance of the study whose online file is gone back online (an
        operator's recall); the number of instances written back. Raises like
        :meth:`local_path` when one cannot be."""
        with self.sessions() as session:
            rows = session.execute(
                select(I.c.id, I.c.study_id, I.c.path, I.c.sha256, I.c.online_removed_at)
                .where(I.c.study_id == study_id).order_by(I.c.id)).all()
        todo = [InstanceRef(int(r.id), int(r.study_id), r.path, r.sha256) for r in rows
                if r.online_removed_at is not None
                or not (self.settings.archive_root / r.path).is_file()]
        if not todo:
            self._clear_study_removed(study_id)
            return 0
        pool = self._executor()
        futures = [pool.submit(self._from_longterm, ref, ref.sha256,
                               self.settings.archive_root / ref.path, True) for ref in todo]
        for future in futures:
            future.result()
        return len(todo)

    def prune_cache(self, max_age_seconds: float = CACHE_MAX_AGE_SECONDS) -> int:
        """Remove cached long-term reads not used for ``max_age_seconds``; how many."""
        if not self.cache_root.is_dir():
            return 0
        cutoff = time.time() - max_age_seconds
        removed = 0
        for directory, _dirs, files in os.walk(self.cache_root):
            for name in files:
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    # -- the online copy -----------------------------------------------------------------

    def _online_problem(self, path: Path, sha256: str, verify: bool) -> str | None:
        """None when ``path`` is intact; else ``missing`` or ``corrupt``."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "unreadable"
        if not verify:
            return None
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        now = time.monotonic()
        with self._verified_lock:
            seen = self._verified.get(key)
            if seen is not None and now - seen < VERIFIED_TTL_SECONDS:
                return None
        try:
            digest = sha256_of(path)
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "unreadable"
        if digest != sha256:
            return "corrupt"
        with self._verified_lock:
            self._verified[key] = now
            self._verified.move_to_end(key)
            while len(self._verified) > _VERIFIED_MAX:
                self._verified.popitem(last=False)
        return None

    # -- the long-term copy --------------------------------------------------------------

    def _from_longterm(self, ref: InstanceRef, sha256: str, online: Path,
                       force_recall: bool = False) -> Path:
        copy = self._copy_row(ref.id)
        if copy is None:
            log.error("instance %s: no intact copy in any tier", ref.id)
            raise NoIntactCopy(f"instance {ref.id}: no intact copy (online file missing or "
                               "corrupt, no verified long-term copy)")
        store = self._store_for(copy.location)
        recall = self.recall or force_recall
        target = online if recall else self.cache_root / ref.path
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            try:
                with staging.open("wb") as out:
                    digest = store.fetch(copy.key, out)
                    out.flush()
                    os.fsync(out.fileno())
            except BlobMissing:
                digest = ""
            except StoreUnavailable as exc:
                log.warning("instance %s: long-term store unreachable: %s", ref.id, exc)
                raise LongtermUnreachable(f"instance {ref.id}: the online copy is not "
                                          f"usable and the long-term store is unreachable "
                                          f"({exc})") from None
            except BlobStoreError as exc:
                raise LongtermUnreachable(f"instance {ref.id}: long-term read failed "
                                          f"({exc})") from None
            if digest != sha256:
                problem = "missing" if not digest else "corrupt"
                self._report(ref, LONGTERM, problem, f"long-term copy {problem}")
                self._fail_copy(copy.id, ref.study_id, f"{problem} when read "
                                f"({'no object' if not digest else 'checksum mismatch'})")
                raise NoIntactCopy(f"instance {ref.id}: the online copy is not usable and "
                                   f"the long-term copy is {problem}")
            os.replace(staging, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
        fsync_dir(target.parent)
        if recall:
            self._recalled(ref)
            self.metrics.longterm_reads.labels("recall").inc()
            log.info("instance %s recalled to the online tier", ref.id)
        else:
            self.metrics.longterm_reads.labels("cache").inc()
        return target

    def _copy_row(self, instance_id: int) -> Any:
        with self.sessions() as session:
            return session.execute(
                select(C.c.id, C.c.location, C.c.key)
                .where(C.c.instance_id == instance_id, C.c.tier == LONGTERM,
                       C.c.verified_at.is_not(None), C.c.failed_at.is_(None))).first()

    def _store_for(self, location: str) -> BlobStore:
        found = self._stores.get(location)
        if found is None:  # a copy made when the tier had another URL
            found = self._stores.setdefault(location, open_store(location, self.settings))
        return found

    # -- the index -----------------------------------------------------------------------

    def _sha256_of(self, instance_id: int) -> str:
        with self.sessions() as session:
            sha256 = session.execute(select(I.c.sha256).where(I.c.id == instance_id)).scalar()
        if sha256 is None:
            raise NoIntactCopy(f"instance {instance_id} is not in the index")
        return str(sha256)

    def _removed_on_purpose(self, instance_id: int) -> bool:
        with self.sessions() as session:
            return session.execute(select(I.c.online_removed_at).where(
                I.c.id == instance_id)).scalar() is not None

    def _recalled(self, ref: InstanceRef) -> None:
        """The file is back online: clear the marks, under the study's row lock (cleanup
        takes it too, so a cleanup and a recall do not interleave on one study)."""
        with self.sessions.begin() as session:
            session.execute(select(S.c.id).where(S.c.id == ref.study_id).with_for_update())
            session.execute(update(I).where(I.c.id == ref.id).values(online_removed_at=None))
            _clear_if_whole(session, ref.study_id)

    def _clear_study_removed(self, study_id: int) -> None:
        with self.sessions.begin() as session:
            session.execute(select(S.c.id).where(S.c.id == study_id).with_for_update())
            _clear_if_whole(session, study_id)

    def _fail_copy(self, copy_id: int, study_id: int, failure: str) -> None:
        """The copy is not to be trusted again: cleanup keeps online files it would have
        relied on, and the migration copies the instance again (when its file is online)."""
        now = utcnow()
        with self.sessions.begin() as session:
            session.execute(update(C).where(C.c.id == copy_id).values(
                failed_at=now, failure=failure, verified_at=None))
            session.execute(update(S).where(S.c.id == study_id).values(longterm_at=None))

    def _report(self, ref: InstanceRef, tier: str, problem: str, what: str) -> None:
        self.metrics.bad_copies.labels(tier, problem).inc()
        log.warning("instance %s (study %s): %s; using the next copy", ref.id, ref.study_id,
                    what)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="reader")
            return self._pool


def _clear_if_whole(session: Session, study_id: int) -> None:
    still_removed = session.execute(select(exists().where(
        and_(I.c.study_id == study_id, I.c.online_removed_at.is_not(None))))).scalar()
    if not still_removed:
        session.execute(update(S).where(S.c.id == study_id, S.c.online_removed_at.is_not(None))
                        .values(online_removed_at=None))






# -- one reader per process and database -------------------------------------------------

_READERS: weakref.WeakKeyDictionary[sessionmaker[Session], dict[tuple[Any, ...],
                                                                 InstanceReader]] = (
    weakref.WeakKeyDictionary())
_READERS_LOCK = threading.Lock()


def _reader_key(settings: Settings) -> tuple[Any, ...]:
    return (settings.archive_root, settings.data_dir, settings.longterm_url,
            settings.s3_endpoint_url, settings.recall_on_retrieve)


def install_reader(settings: Settings, sessions: sessionmaker[Session], *,
                   metrics: CollectorRegistry | None = None) -> InstanceReader:
    """Create (or return) the reader egress uses for these settings and database, counting
    into ``metrics`` (the composition root's registry, served on ``/metrics``)."""
    with _READERS_LOCK:
        readers = _READERS.setdefault(sessions, {})
        key = _reader_key(settings)
        reader = readers.get(key)
        if reader is None:
            reader = InstanceReader(settings, sessions, open_longterm_store(settings),
                                    metrics=metrics)
            readers[key] = reader
        return reader


def reader_for(settings: Settings, sessions: sessionmaker[Session]) -> InstanceReader:
    """The reader for egress call sites: the one :func:`install_reader` made (with the
    bridge's metrics), or a new one with private metrics (tests, the CLI)."""
    return install_reader(settings, sessions)


def recall_study(settings: Settings, sessions: sessionmaker[Session], study: int | str) -> int:
    """An operator's recall of a study held (partly) only in long-term storage, by
    ``studies.id`` or Study Instance UID (API, CLI); the instances written back online.
    Raises :class:`~bridge.errors.NotFound` for an unknown study."""
    if isinstance(study, str):
        with sessions() as session:
            found = session.execute(select(S.c.id).where(
                S.c.study_instance_uid == study)).scalar()
        if found is None:
            raise NotFound("no such study", location="study_instance_uid")
        study = int(found)
    return reader_for(settings, sessions).recall_study(study)

"""``bridge import PATH...``: legacy modality files from folders (or single files) into the
archive, with a progress bar and a summary.

It works on the configured database and archive directly, with or without ``bridge serve``
running: the archive store serialises its writers in this process, and the database (SQLite's
lock with a busy timeout, or PostgreSQL) serialises them between processes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.cli.common import ConfigOption, cli_settings, err, out

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from bridge.services.legacy_import import ImportReport



def import_command(
    paths: Annotated[list[Path], typer.Argument(
        help="Folders (walked recursively) or files: DICOM with any extension or none, "
             "DICOMDIR sets, JPEG, PNG, BMP, TIFF.", exists=True)],
    source: Annotated[str | None, typer.Option(
        help="Take calling AE, mapping and transliteration from this configured source "
             "(BRIDGE_IMPORT_SOURCES) and record the files under its name.")] = None,
    calling_ae: Annotated[str | None, typer.Option(
        "--calling-ae", help="Record objects as sent by this AE title (its dicom_peers "
                             "charset decodes undeclared text).")] = None,
    mapping: Annotated[str | None, typer.Option(
        help="Metadata table mappings/import/NAME.yaml for images (default: 'default').")
    ] = None,
    pattern: Annotated[list[str] | None, typer.Option(
        help="File-name pattern replacing the table's, e.g. "
             "'{PatientID}_{StudyDate}_{AccessionNumber}_{n}.{ext}' (repeatable).")] = None,
    transliterate: Annotated[bool | None, typer.Option(
        "--transliterate/--no-transliterate",
        help="Write image metadata in Latin letters (KMU 55 / ICAO).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check and report every file; store and record nothing.")] = False,
    as_user: Annotated[str | None, typer.Option(
        "--as", help="A clinician's username: the studies this run creates are theirs "
                     "(they may see them), as when they upload by STOW-RS.")] = None,
    config: ConfigOption = None,
) -> None:
    """Import legacy modality files into the archive, through the same checks and
    reconciliation as C-STORE. Files already processed (same path, size and time) are
    skipped; the same content under another name is a duplicate. Bad files are reported
    with the reason and left in place: nothing is ever moved or deleted."""
    from bridge.mapping.tables import TableError
    from bridge.services.access.uploads import claim_uploads
    from bridge.services.archive.store import ArchiveStore
    from bridge.services.legacy_import import build_importer, walk
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade
    from bridge.store.models import utcnow

    settings = cli_settings(config)
    if settings.log_level != "DEBUG":  # the summary lists every file not imported
        logging.getLogger("bridge.import").setLevel(logging.ERROR)
    chosen = None
    if source is not None:
        chosen = next((s for s in settings.import_sources if s.name == source), None)
        if chosen is None:
            known = ", ".join(s.name for s in settings.import_sources) or "none configured"
            err.print(f"[red]--source:[/red] no import source {source!r} ({known})")
            raise typer.Exit(2)
    engine = make_engine(settings.database_url)
    started = utcnow()
    try:
        upgrade(engine)
        sessions = make_session_factory(engine)
        uploader = _uploader(sessions, as_user) if as_user else None
        store = ArchiveStore(settings, sessions)
        try:
            importer = build_importer(settings, store, source=chosen, calling_ae=calling_ae,
                                      mapping=mapping, patterns=pattern,
                                      transliterate=transliterate, dry_run=dry_run)
        except TableError as exc:
            err.print(f"[red]mapping error:[/red] {exc}")
            raise typer.Exit(2) from None
        with Progress(TextColumn("listing files"), TimeElapsedColumn(), console=err,
                      transient=True):
            versions = list(walk(paths, skip=[settings.archive_root]))
        with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True) as progress:
            task = progress.add_task("import", total=len(versions))
            report = importer.run(versions, progress=lambda _: progress.advance(task))
        if uploader is not None and not dry_run:
            with sessions.begin() as session:
                claim_uploads(session, uploader, since=started, study_ids={
                    sid for o in report.outcomes for sid in o.study_ids})
    finally:
        engine.dispose()
    _summary(report, dry_run=dry_run)
    problems = report.count("rejected") + report.count("failed")
    raise typer.Exit(1 if problems else 0)


def _uploader(sessions: sessionmaker[Session], username: str) -> int:
    """The clinician ``--as`` names; exits 2 when they are not a clinician of the directory."""
    from sqlalchemy import select

    from bridge.services.auth.principal import CLINICIAN_ROLES
    from bridge.store.people_models import User

    with sessions() as session:
        user = session.execute(select(User).where(User.username == username)
                               ).scalar_one_or_none()
    if user is None or user.disabled or user.role not in CLINICIAN_ROLES:
        err.print(f"[red]--as:[/red] {username!r} is not an active clinician of the directory")
        raise typer.Exit(2)
    return int(user.id)


def _summary(report: ImportReport, *, dry_run: bool) -> None:
    objects = sum(o.objects for o in report.outcomes if o.status == "imported")
    megabytes = sum(o.size for o in report.outcomes if o.status == "imported") / 1e6
    totals = Table("outcome", "files", title="dry run: nothing stored" if dry_run else None)
    totals.add_row("would import" if dry_run else "imported",
                   f"{report.count('imported')} ({objects} objects, {megabytes:.1f} MB)")
    for status, label in (("duplicate", "duplicates"), ("rejected", "rejected"),
                          ("failed", "failed (tried again next time)"),
                          ("directory", "DICOMDIR sets"), ("metadata", "sidecar files"),
                          ("changing", "changing (left for later)")):
        totals.add_row(label, str(report.count(status)))
    totals.add_row("already processed", str(report.already_processed))
    out.print(totals)
    listed = report.with_status("rejected", "failed", "duplicate")
    if listed:
        details = Table("file", "outcome", "reason", title="files not imported")
        for outcome in listed:
            details.add_row(str(outcome.path), outcome.status, outcome.reason or "")
        out.print(details)

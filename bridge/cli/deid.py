"""``bridge deid``: de-identify files or stored studies for outside, restore what comes back,
and manage the master key. ``bridge deid FILES_OR_DIR... --out DIR`` is the files command
(``files`` may be left out)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session, sessionmaker
from typer.core import TyperGroup

from bridge.cli.common import ConfigOption, cli_settings
from bridge.config.settings import Settings

#: Paths and reasons are printed whole (no wrapping): operators grep them.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _FilesByDefault(TyperGroup):
    """``bridge deid PATH...`` runs ``bridge deid files PATH...``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["files", *args]
        return super().resolve_command(ctx, args)


deid_app = typer.Typer(cls=_FilesByDefault, no_args_is_help=True, help=(
    "De-identification (PS3.15 Annex E) for studies that leave the hospital. "
    "`bridge deid FILES_OR_DIR... --out DIR` de-identifies files (the key stays in the "
    "database); `export`, `restore`, `new-key`, `rotate-key`."))


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True)


@contextmanager
def _database(config: Path | None) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    from bridge.store.audit import set_chain_key
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    settings = cli_settings(config)
    set_chain_key(settings.audit_hmac_key.get_secret_value().encode("utf-8") or None)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    try:
        yield settings, make_session_factory(engine)
    finally:
        engine.dispose()


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(code)


@deid_app.command("files")
def deid_files(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="Files or folders.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the de-identified files go.")],
    to: Annotated[str, typer.Option(
        "--to", help="Whose pseudonyms: a destination's name (its options unless --option "
                     "is given), or any name for a set of pseudonyms of its own.")] = "files",
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="A PS3.15 option (retain_modified_dates, clean_descriptors, ...); "
                         "repeat for more.")] = None,
    config: ConfigOption = None,
) -> None:
    """De-identify files into --out (named by pseudonymous UIDs); keys kept in the database."""
    from bridge.errors import BridgeError
    from bridge.services.deid.files import collect, deidentify_files

    with _database(config) as (settings, sessions):
        configured = settings.deid_destination(to)
        options = tuple(sorted(set(option))) if option else \
            (configured.options if configured else ())
        files = collect(paths)
        try:
            with _progress() as progress:
                task = progress.add_task("de-identify", total=len(files))
                report = deidentify_files(settings, sessions, files, out_dir, destination=to,
                                          options=options, actor="cli",
                                          progress=lambda n: progress.advance(task, n))
        except (BridgeError, ValueError) as exc:
            raise _fail(getattr(exc, "message", str(exc))) from None
    out.print(f"export {report.export_id}: {report.sent} de-identified into {out_dir}, "
              f"{len(report.held)} held back, {len(report.refused)} refused")
    for path, reason in [*report.held, *report.refused]:
        err.print(f"  {path}: {reason}", markup=False)
    raise typer.Exit(1 if report.refused else 0)


@deid_app.command("restore")
def deid_restore(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="Files or folders back "
                                                                  "from outside.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the restored files go.")],
    config: ConfigOption = None,
) -> None:
    """Restore files that come back: byte for byte when unchanged, re-identified otherwise."""
    from bridge.errors import BridgeError
    from bridge.services.deid.files import collect, restore_files

    with _database(config) as (settings, sessions):
        files = collect(paths)
        try:
            with _progress() as progress:
                task = progress.add_task("restore", total=len(files))
                report = restore_files(settings, sessions, files, out_dir, actor="cli",
                                       progress=lambda n: progress.advance(task, n))
        except BridgeError as exc:
            raise _fail(exc.message) from None
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.restored.items())) or "none"
    out.print(f"restored into {out_dir}: {kinds}; {len(report.refused)} not recognised")
    for path, reason in report.refused:
        err.print(f"  {path}: {reason}", markup=False)
    raise typer.Exit(1 if report.refused else 0)


@deid_app.command("export")
def deid_export(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID.")],
    to: Annotated[str, typer.Option("--to", help="Destination (BRIDGE_DEID_DESTINATIONS).")],
    wait: Annotated[bool, typer.Option(help="Run and follow it here (else only queue it "
                                            "for the running bridge).")] = True,
    config: ConfigOption = None,
) -> None:
    """Queue a stored study's de-identified export; with --wait, run it with a progress bar."""
    from sqlalchemy import select

    from bridge.errors import BridgeError
    from bridge.services.deid import exports
    from bridge.store.archive_models import Study

    with _database(config) as (settings, sessions):
        try:
            with sessions() as session, session.begin():
                study_id = session.execute(select(Study.id).where(
                    Study.study_instance_uid == study)).scalar_one_or_none()
                if study_id is None:
                    raise _fail(f"no study {study}")
                export = exports.start_export(session, settings, study_id=study_id,
                                              destination=to, actor="cli", roles=("admin",),
                                              source="cli")
                export_id, total = export.id, export.total
        except BridgeError as exc:
            raise _fail(exc.message) from None
        out.print(f"export {export_id} queued ({total} objects to {to})")
        if wait:
            _follow(settings, sessions, export_id, total)


def _follow(settings: Settings, sessions: sessionmaker[Session], export_id: int,
            total: int) -> None:
    from bridge.jobs.worker import JobWorker
    from bridge.services.deid import exports
    from bridge.store.archive_models import Job
    from bridge.store.deid_models import DeidExport

    worker = JobWorker(sessions, {exports.DEID_QUEUE: exports.ExportHandler(settings, sessions)},
                       policies={exports.DEID_QUEUE: exports.retry_policy(settings)})
    finished = threading.Event()

    def run() -> None:
        try:
            while not finished.is_set() and worker.run_once():
                pass
        finally:
            finished.set()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    with _progress() as progress:
        task = progress.add_task(f"export {export_id}", total=total or None)
        while True:
            with sessions() as session:
                export = session.get(DeidExport, export_id)
                assert export is not None
                job = session.get(Job, export.job_id) if export.job_id else None
                progress.update(task, completed=export.sent + export.held + export.failed)
                state, job_state = export.status, job.status if job else "done"
                error = job.last_error if job else None
                counts = (export.sent, export.held, export.failed)
            if state in ("done", "partial", "failed") and job_state in ("done", "failed"):
                break
            if finished.is_set() and job_state == "pending":
                err.print(f"export {export_id} waits for a retry: {error}")
                raise typer.Exit(1)
            time.sleep(0.2)
    finished.set()
    runner.join(30)
    out.print(f"export {export_id}: {state}: {counts[0]} sent, {counts[1]} held back, "
              f"{counts[2]} refused")
    raise typer.Exit(0 if state == "done" else 1)


@deid_app.command("fetch")
def deid_fetch(
    study: Annotated[str, typer.Option("--study", help="The real Study Instance UID.")],
    source: Annotated[str, typer.Option("--from", help="The destination it was sent to.")],
    config: ConfigOption = None,
) -> None:
    """Fetch a study back from a destination, restore it and put it in the archive."""
    from bridge.errors import BridgeError
    from bridge.services.archive.store import ArchiveStore
    from bridge.services.deid.returns import fetch_back

    with _database(config) as (settings, sessions):
        try:
            with _progress() as progress:
                progress.add_task(f"fetch from {source}", total=None)
                result = fetch_back(settings, sessions, ArchiveStore(settings, sessions),
                                    destination=source, study_uid=study, actor="cli")
        except BridgeError as exc:
            raise _fail(exc.message) from None
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result.archived.items())) or "none"
    out.print(f"archived: {kinds}; {len(result.refused)} not restored")
    for reason in result.refused:
        err.print(f"  {reason}", markup=False)
    raise typer.Exit(1 if result.refused else 0)


@deid_app.command("new-key")
def deid_new_key(
    out_file: Annotated[Path, typer.Option("--out", help="The key file to write (mode 0600).")],
) -> None:
    """Write a new master key (64 hex characters) for BRIDGE_DEID_MASTER_KEY_FILE."""
    from bridge.services.deid.keys import MasterKey, new_key

    key = new_key()
    descriptor = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key.hex() + "\n")
    out.print(f"master key {MasterKey.of(key).kid} written to {out_file}")


@deid_app.command("rotate-key")
def deid_rotate_key(
    new_key_file: Annotated[Path, typer.Option("--new-key-file", exists=True,
                                               help="The new master key's file.")],
    config: ConfigOption = None,
) -> None:
    """Re-wrap every export's key and every destination's secret with a new master key
    (the configured key is the old one); then point BRIDGE_DEID_MASTER_KEY_FILE at it."""
    from bridge.errors import BridgeError
    from bridge.services.deid import records
    from bridge.services.deid.keys import MasterKey, master_key, parse_key

    with _database(config) as (settings, sessions):
        try:
            old = master_key(settings)
            new = MasterKey.of(parse_key(new_key_file.read_bytes()))
            with sessions() as session, session.begin():
                rotated = records.rotate(session, old, new)
                others = records.foreign_keys(session, new.kid)
        except BridgeError as exc:
            raise _fail(exc.message) from None
    out.print(f"re-wrapped {rotated.exports} export keys and {rotated.destinations} "
              f"destination secrets from master key {old.kid} to {new.kid}")
    if others:
        err.print(f"[yellow]{others} keys are wrapped by yet another master key (an earlier "
                  "rotation not finished): rotate from that key too[/yellow]")

"""``bridge storage``: usage, cleanup (and its dry run), migration and recall from the shell.

They work on the configured database and archive directly, with or without ``bridge serve``
running (the database serialises the writers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.cli.common import ConfigOption, cli_settings, err, out
from bridge.config.settings import Settings
from bridge.errors import BridgeError

if TYPE_CHECKING:  # imported when a command runs: ``bridge --help`` stays quick
    from bridge.storage.ops import StorageOps

storage_app = typer.Typer(help="Storage tiers: usage, cleanup, migration, recall.",
                          no_args_is_help=True)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} TB"


@contextmanager
def _ops(config: Path | None) -> Iterator[tuple[Settings, StorageOps]]:
    from bridge.storage.ops import build_storage_ops
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    settings = cli_settings(config)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    try:
        yield settings, build_storage_ops(settings, make_session_factory(engine))
    finally:
        engine.dispose()


T = TypeVar("T")


def _needs_tier(operation: T | None) -> T:
    """An operation that exists only with a long-term tier, or exit 2 saying so."""
    if operation is None:
        err.print("no long-term tier configured (BRIDGE_LONGTERM_URL)")
        raise typer.Exit(2)
    return operation


@contextmanager
def _spinner(text: str) -> Iterator[None]:
    with Progress(SpinnerColumn(), TextColumn(text), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        progress.add_task(text, total=None)
        yield


@storage_app.command("usage")
def usage(config: ConfigOption = None) -> None:
    """Usage per tier and modality, capacity, pending migrations and the last cleanup."""
    from bridge.storage.cleanup import last_cleanup, measure_capacity
    from bridge.storage.usage import current_usage, pending_migrations

    with _ops(config) as (settings, ops), ops.sessions() as session:
        tiers = current_usage(session)
        cap = measure_capacity(session, settings)
        pending = pending_migrations(session, settings)
        last = last_cleanup(session)
    table = Table("tier", "modality", "instances", "size")
    for row in tiers:
        table.add_row(row.tier, row.modality or "(all)", str(row.instances), _human(row.bytes))
    out.print(table)
    out.print(f"online capacity {_human(cap.capacity)}, used {_human(cap.used)} "
              f"({100 * cap.used / cap.capacity if cap.capacity else 0:.1f} %), "
              f"marks {settings.cleanup_low_water_percent:g} % / "
              f"{settings.cleanup_high_water_percent:g} %")
    if settings.longterm_url:
        out.print(f"pending migrations: {pending.due_studies} due ({_human(pending.due_bytes)}),"
                  f" {pending.waiting_studies} waiting for the delay")
    else:
        out.print("no long-term tier configured (BRIDGE_LONGTERM_URL)")
    out.print(f"last cleanup: {last if last else 'never'}")


@storage_app.command("cleanup")
def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing."
                                          )] = False,
    config: ConfigOption = None,
) -> None:
    """Run online cleanup now: the time rule, then the capacity rule."""

    with _ops(config) as (_settings, ops), \
            _spinner("cleaning up" if not dry_run else "planning cleanup"):
        report = ops.cleanup(dry_run=dry_run, actor="cli")
    table = Table("study", "modalities", "reason", "instances", "size",
                  title="would be removed from the online tier" if dry_run
                  else "removed from the online tier")
    for removal in report.removed:
        table.add_row(removal.study_instance_uid, removal.modalities, removal.reason,
                      str(removal.instances), _human(removal.bytes))
    out.print(table)
    for study_uid, why in report.kept:
        out.print(f"kept {study_uid}: {why}")
    out.print(f"{len(report.removed)} studies, {_human(report.removed_bytes)}; online usage "
              f"{_human(report.usage_before)} -> {_human(report.usage_after)} of "
              f"{_human(report.capacity_bytes)}")
    if report.note:
        out.print(report.note)
    if report.short_of_low_mark:
        out.print("[yellow]still above the low mark: the rest has no verified long-term copy"
                  "[/yellow]")


@storage_app.command("migrate")
def migrate(
    every_stable: Annotated[bool, typer.Option(
        "--all", help="Every stable study, not only those past BRIDGE_LONGTERM_DELAY_SECONDS."
    )] = False,
    config: ConfigOption = None,
) -> None:
    """Copy every due study to the long-term tier now, verifying each copy."""

    with _ops(config) as (_settings, ops):
        migrate_now = _needs_tier(ops.migrate_now)
        with _spinner("copying to the long-term tier"):
            report = migrate_now(every_stable)
    out.print(report)


@storage_app.command("recall")
def recall(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID.")],
    config: ConfigOption = None,
) -> None:
    """Copy a study held only in long-term storage back to the online tier."""

    with _ops(config) as (_settings, ops):
        recall_study = _needs_tier(ops.recall)
        with _spinner("recalling"):
            try:
                count = recall_study(study_uid)
            except BridgeError as exc:  # e.g. no such study: said, not a traceback
                err.print(f"[red]{exc.message}[/red]")
                raise typer.Exit(1) from None
    out.print(f"{study_uid}: {count} instances online")


@storage_app.command("history")
def history(
    days: Annotated[int, typer.Option(help="How far back.")] = 30,
    config: ConfigOption = None,
) -> None:
    """Usage samples over time (tier totals)."""
    from datetime import UTC, datetime, timedelta

    from bridge.storage.usage import history as usage_history

    with _ops(config) as (_settings, ops), ops.sessions() as session:
        points = usage_history(session, since=datetime.now(UTC) - timedelta(days=days))
    table = Table("at", "tier", "instances", "size")
    for p in points:
        table.add_row(p.at.isoformat(timespec="seconds"), p.tier, str(p.instances),
                      _human(p.bytes))
    out.print(table)

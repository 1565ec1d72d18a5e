"""The ``bridge`` command line. Every command has ``--help``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bridge import __version__
from bridge.cli_import import import_command
from bridge.cli_storage import storage_app
from bridge.config import ConfigError, Settings, load_settings

app = typer.Typer(help="bridge: HL7 v2 / FHIR ↔ DICOM integration engine.",
                  no_args_is_help=True, add_completion=False)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
worklist_app = typer.Typer(help="The modality worklist.", no_args_is_help=True)
hl7_app = typer.Typer(help="HL7 v2 tools.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(worklist_app, name="worklist")
app.add_typer(hl7_app, name="hl7")
app.add_typer(storage_app, name="storage")
app.command("import")(import_command)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (keys as in README).")
]
err = Console(stderr=True)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it is a dependency): its transports cost a fraction
    of asyncio's per MLLP message; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Apply migrations and run every listener (MLLP, DICOM, HTTP) until interrupted."""
    from bridge.app import serve as run
    from bridge.logging_setup import configure_logging

    settings = _settings(config)
    configure_logging(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(run(settings))
    except OSError as exc:
        err.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Bring the database schema up to date (safe to run repeatedly)."""
    from bridge.store.db import make_engine
    from bridge.store.migrate import upgrade

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    typer.echo("database is up to date")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin | integration | viewer")],
    name: Annotated[str, typer.Option(help="Who or what the token is for.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from bridge.services.tokens import create_token
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    if role not in ("admin", "integration", "viewer"):
        err.print("--role must be admin, integration or viewer")
        raise typer.Exit(2)
    settings = _settings(config)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with make_session_factory(engine)() as session, session.begin():
        token = create_token(session, role=role, name=name)
    engine.dispose()
    typer.echo(token)


@worklist_app.command("list")
def worklist_list(
    station: Annotated[str | None, typer.Option(help="Scheduled station AE title.")] = None,
    modality: Annotated[str | None, typer.Option(help="Modality, e.g. CT.")] = None,
    date: Annotated[str | None, typer.Option(help="Start date YYYYMMDD.")] = None,
    all_statuses: Annotated[bool, typer.Option("--all", help="Include closed steps.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
    config: ConfigOption = None,
) -> None:
    """List scheduled procedure steps (patient names are shown: this is a local console)."""
    from sqlalchemy import select

    from bridge.domain import CLOSED_STATUSES
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    query = (
        select(ProcedureStep, Order, Patient, PatientIdentifier)
        .join(Order, ProcedureStep.order_id == Order.id)
        .join(Patient, Order.patient_id == Patient.id)
        .join(PatientIdentifier, (PatientIdentifier.patient_id == Patient.id)
              & (PatientIdentifier.position == 0), isouter=True)
        .order_by(ProcedureStep.start_date, ProcedureStep.start_time).limit(limit)
    )
    if station:
        query = query.where(ProcedureStep.station_ae == station)
    if modality:
        query = query.where(ProcedureStep.modality == modality.upper())
    if date:
        query = query.where(ProcedureStep.start_date == date)
    if not all_statuses:
        query = query.where(ProcedureStep.status.not_in([s.value for s in CLOSED_STATUSES]))
    table = Table("start", "station", "mod", "accession", "SPS", "status", "patient ID", "name")
    with make_session_factory(engine)() as session:
        for step, order, patient, ident in session.execute(query):
            table.add_row(f"{step.start_date or ''} {step.start_time or ''}", step.station_ae,
                          step.modality, order.accession, step.sps_id, step.status,
                          ident.value if ident else "", patient.name.replace("^", " "))
    engine.dispose()
    Console().print(table)


@hl7_app.command("send")
def hl7_send(
    files: Annotated[list[Path], typer.Argument(help="Files with one HL7 message each.",
                                                exists=True, dir_okay=False)],
    host: Annotated[str, typer.Option(help="MLLP host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MLLP port.")] = 2575,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK.")] = 30.0,
) -> None:
    """Send messages over MLLP (one connection) and print each ACK."""
    from bridge.adapters.mllp_client import MLLPClient, ack_code

    failed = 0
    with MLLPClient(host, port, timeout=timeout) as client, Progress(
            console=err, transient=True, disable=len(files) < 20) as progress:
        task = progress.add_task("sending", total=len(files))
        for path in files:
            raw = path.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
            for reply in client.exchange(raw.rstrip(b"\r") + b"\r"):
                code = ack_code(reply)
                failed += code not in ("AA", "CA")
                typer.echo(f"{path}: {code}")
                typer.echo(reply.decode("utf-8", errors="replace").replace("\r", "\n"))
            progress.advance(task)
    raise typer.Exit(1 if failed else 0)


@app.command()
def version() -> None:
    """Print the bridge's version."""
    typer.echo(f"bridge {__version__} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    app()

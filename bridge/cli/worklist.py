"""``bridge worklist``: the modality worklist from the shell."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bridge.cli.common import ConfigOption, cli_settings, out

worklist_app = typer.Typer(help="The modality worklist.", no_args_is_help=True)


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

    settings = cli_settings(config)
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
    out.print(table)

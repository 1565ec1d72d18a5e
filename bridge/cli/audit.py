"""``bridge audit``: read the audit trail and verify its hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from bridge.cli.common import ConfigOption, err, out
from bridge.cli.user import directory_session

audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None) -> None:
    """Check every record's hash and link; exit 1 at the first record removed or edited.
    Prints the head (seq and hash): keep it elsewhere to detect records cut off the end."""
    from bridge.store.audit import verify_chain

    with directory_session(config) as session:
        report = verify_chain(session)
    if report.broken is not None:
        err.print(f"audit chain BROKEN at seq {report.broken.seq}: {report.broken.reason} "
                  f"({report.checked} records hold before it)")
        raise typer.Exit(1)
    out.print(f"audit chain holds: {report.checked} records, head seq {report.head_seq} "
              f"hash {report.head_hash}")


@audit_app.command("list")
def audit_list(
    actor: Annotated[str | None, typer.Option(help="Who (Practitioner/N, a token name).")] = None,
    action: Annotated[str | None, typer.Option(help="read, search, login, share, ...")] = None,
    patient: Annotated[str | None, typer.Option(help="Patient/N (the bridge's patient id)")] = None,
    entity: Annotated[str | None, typer.Option(help="study, login, referral, ...")] = None,
    outcome: Annotated[str | None, typer.Option(help="success | failure")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this time (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 100,
    config: ConfigOption = None,
) -> None:
    """Print audit records, newest first, as tab-separated lines."""
    from bridge.store.audit import search_audit

    with directory_session(config) as session:
        rows = search_audit(session, actor=actor, action=action, patient_ref=patient,
                            entity=entity, outcome=outcome, since=since, limit=limit)
        for row in rows:
            typer.echo(f"{row.seq}\t{row.at.isoformat()}\t{row.actor}\t{row.action}\t"
                       f"{row.entity}/{row.entity_id}\t{row.outcome}\t{row.patient_ref or ''}")

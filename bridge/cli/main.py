"""The ``bridge`` command line: the root command and its groups. Every command has ``--help``.

Each group lives in its own module (:mod:`bridge.cli.serve`, :mod:`bridge.cli.token`, ...);
commands import what they run when they run, so ``bridge --help`` stays quick.
"""

from __future__ import annotations

import sys

import typer

from bridge import __version__
from bridge.cli.audit import audit_app
from bridge.cli.deid import deid_app
from bridge.cli.hl7 import hl7_app
from bridge.cli.legacy_import import import_command
from bridge.cli.serve import migrate, serve
from bridge.cli.storage import storage_app
from bridge.cli.token import token_app
from bridge.cli.user import org_app, user_app
from bridge.cli.worklist import worklist_app

app = typer.Typer(help="bridge: HL7 v2 / FHIR ↔ DICOM integration engine.",
                  no_args_is_help=True, add_completion=False)
app.command()(serve)
app.command()(migrate)
app.add_typer(token_app, name="token")
app.add_typer(worklist_app, name="worklist")
app.add_typer(hl7_app, name="hl7")
app.add_typer(storage_app, name="storage")
app.add_typer(user_app, name="user")
app.add_typer(org_app, name="org")
app.add_typer(audit_app, name="audit")
app.add_typer(deid_app, name="deid")
app.command("import")(import_command)


@app.command()
def version() -> None:
    """Print the bridge's version."""
    typer.echo(f"bridge {__version__} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    app()

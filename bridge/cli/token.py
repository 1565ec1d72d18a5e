"""``bridge token``: API tokens for systems (shown once; only the hash is kept)."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.common import ConfigOption, cli_settings, err

token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin | integration | viewer")],
    name: Annotated[str, typer.Option(help="Who or what the token is for.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from bridge.services.auth.tokens import create_token
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    if role not in ("admin", "integration", "viewer"):
        err.print("--role must be admin, integration or viewer")
        raise typer.Exit(2)
    settings = cli_settings(config)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with make_session_factory(engine)() as session, session.begin():
        token = create_token(session, role=role, name=name)
    engine.dispose()
    typer.echo(token)

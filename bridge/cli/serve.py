"""``bridge serve`` (every listener until interrupted) and ``bridge migrate``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import typer

from bridge.cli.common import ConfigOption, cli_settings, err


def serve(config: ConfigOption = None) -> None:
    """Apply migrations and run every listener (MLLP, DICOM, HTTP) until interrupted."""
    from bridge.app.logging_setup import configure_logging
    from bridge.app.runtime import serve as run

    settings = cli_settings(config)
    configure_logging(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(run(settings))
    except OSError as exc:
        err.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(1) from None


def migrate(config: ConfigOption = None) -> None:
    """Bring the database schema up to date (safe to run repeatedly)."""
    from bridge.store.db import make_engine
    from bridge.store.migrate import upgrade

    settings = cli_settings(config)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    typer.echo("database is up to date")


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it is a dependency): its transports cost a fraction
    of asyncio's per MLLP message; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

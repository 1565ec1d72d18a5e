"""What every command module shares: the ``--config`` option, the consoles, and loading the
settings with a clear answer for a bad file. It imports none of the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bridge.config.settings import ConfigError, Settings, load_settings

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (keys as in README).")
]
#: Results go to standard output, progress and errors to standard error.
out = Console()
err = Console(stderr=True)


def cli_settings(config: Path | None) -> Settings:
    """The settings for a command, or exit 2 naming what is wrong in them."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None

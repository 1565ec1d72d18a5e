"""``bridge hl7``: HL7 v2 tools (send messages over MLLP and print the ACKs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from bridge.cli.common import err

hl7_app = typer.Typer(help="HL7 v2 tools.", no_args_is_help=True)


@hl7_app.command("send")
def hl7_send(
    files: Annotated[list[Path], typer.Argument(help="Files with one HL7 message each.",
                                                exists=True, dir_okay=False)],
    host: Annotated[str, typer.Option(help="MLLP host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MLLP port.")] = 2575,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK.")] = 30.0,
) -> None:
    """Send messages over MLLP (one connection) and print each ACK."""
    from bridge.clients.mllp import MLLPClient, ack_code

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

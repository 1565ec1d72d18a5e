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
    tls_ca: Annotated[Path | None, typer.Option(
        help="MLLP over TLS: the CA file (PEM) that signed the listener's certificate.",
        exists=True, dir_okay=False)] = None,
    tls_certificate: Annotated[Path | None, typer.Option(
        help="With --tls-ca: this client certificate (PEM; its key in the same file or "
             "--tls-key).", exists=True, dir_okay=False)] = None,
    tls_key: Annotated[Path | None, typer.Option(
        help="The client certificate's private key (PEM).", exists=True,
        dir_okay=False)] = None,
) -> None:
    """Send messages over MLLP (one connection) and print each ACK."""
    import ssl

    from bridge.clients.mllp import MLLPClient, ack_code

    tls = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca is not None else None
    if tls is not None and tls_certificate is not None:
        tls.load_cert_chain(str(tls_certificate), str(tls_key) if tls_key else None)
    failed = 0
    with MLLPClient(host, port, timeout=timeout, tls=tls) as client, Progress(
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

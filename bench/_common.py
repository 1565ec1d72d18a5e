"""Shared helpers for the benchmarks: free ports, processes (the bridge among them), the
database to run on, percentiles, and the command line bits every benchmark has."""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
                  ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else b""
            raise RuntimeError(f"process exited with {proc.returncode}: {err[-500:]!r}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A throw-away schema, so a benchmark never touches other data."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in base_url else "?"
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def scratch_database(sqlite_file: Path, postgres_url: str | None) -> Iterator[str]:
    """SQLite in ``sqlite_file``, or with ``postgres_url`` a throw-away PostgreSQL schema."""
    if not postgres_url:
        yield f"sqlite:///{sqlite_file}"
        return
    with postgres_schema(postgres_url) as url:
        yield url


def bench_token(database_url: str, role: str = "integration", *, migrate: bool = True) -> str:
    """An API token with ``role`` in the bench's database (migrated first unless told)."""
    from bridge.services.auth.tokens import create_token
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    engine = make_engine(database_url)
    try:
        if migrate:
            upgrade(engine)
        with make_session_factory(engine).begin() as session:
            return create_token(session, role=role, name="bench")
    finally:
        engine.dispose()


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Terminate ``proc``; kill it when it has not ended within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextmanager
def bridge_process(data_dir: Path, database_url: str | None = None,
                   extra_env: dict[str, str] | None = None) -> Iterator[dict[str, int]]:
    """``bridge serve`` in its own process (so the load generator does not share its GIL)."""
    ports = {"mllp": free_port(), "dicom": free_port(), "http": free_port()}
    env = {**os.environ, "BRIDGE_DATA_DIR": str(data_dir), "BRIDGE_LOG_LEVEL": "WARNING",
           "BRIDGE_MLLP_PORT": str(ports["mllp"]), "BRIDGE_DICOM_PORT": str(ports["dicom"]),
           "BRIDGE_HTTP_PORT": str(ports["http"]), **(extra_env or {})}
    if database_url:
        env["BRIDGE_DATABASE_URL"] = database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "bridge.log").open("wb")  # a pipe nobody reads would block the bridge
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve"], env=env, cwd=ROOT,
                            stderr=log)
    try:
        wait_for_port(ports["http"], 60, proc)
        yield ports
    finally:
        stop_process(proc, 30)
        log.close()


class StealMeter:
    """CPU time the hypervisor gave to other guests while a measurement ran (``st`` in
    vmstat), as a share of the machine's CPU time: on a shared VM the figures mean little
    without it."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return (0, 0)
        values = [int(v) for v in fields]
        steal = values[7] if len(values) > 7 else 0
        return steal, sum(values[:8])

    def percent(self) -> float:
        steal, total = self._read()
        spent = total - self._start[1]
        return round(100 * (steal - self._start[0]) / spent, 1) if spent > 0 else 0.0


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def no_delay(assoc: Any) -> None:
    """Disable Nagle on a pynetdicom client association's socket, as DCMTK (and most
    modalities) do: pynetdicom sends command and data set as two PDUs, and the second would
    wait ~40 ms for the peer's delayed ACK."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def percentile(values: Sequence[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries only the result (a table or JSON)."""
    print(message, file=sys.stderr, flush=True)


def print_header(header: str) -> None:
    """A result table's column titles, underlined."""
    print(header)
    print("-" * len(header))


def add_common_options(parser: argparse.ArgumentParser, *, postgres_help: str) -> None:
    """``--postgres`` (with ``--postgres-url``) and ``--json``."""
    parser.add_argument("--postgres", action="store_true", help=postgres_help)
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def postgres_url(args: argparse.Namespace) -> str | None:
    """The PostgreSQL base URL when ``--postgres`` was given."""
    return str(args.postgres_url) if args.postgres else None

"""The ``bridge`` command as an operator uses it: serve, send, query, tokens, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURES, free_port, require_tool

BRIDGE = [sys.executable, "-m", "bridge"]
COMMANDS = [[], ["serve"], ["migrate"], ["token"], ["token", "create"], ["worklist"],
            ["worklist", "list"], ["hl7"], ["hl7", "send"], ["version"]]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or clean_env())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "bridge")
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0 and result.stdout.startswith("bridge ")


def test_bad_setting_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    result = run("serve", env=clean_env(BRIDGE_DATA_DIR=str(tmp_path), BRIDGE_MLLP_PORT="x"))
    assert result.returncode == 2
    assert "BRIDGE_MLLP_PORT" in result.stderr


def test_public_bind_without_peer_allow_list_is_refused(tmp_path: Path) -> None:
    result = run("serve", env=clean_env(BRIDGE_DATA_DIR=str(tmp_path), BRIDGE_BIND="0.0.0.0"))
    assert result.returncode == 2
    assert "BRIDGE_BIND" in result.stderr and "allow-list" in result.stderr


def test_config_file_errors_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("http_port = -5\n", "utf-8")
    result = run("migrate", "--config", str(config), env=clean_env(BRIDGE_DATA_DIR=str(tmp_path)))
    assert result.returncode == 2
    assert "BRIDGE_HTTP_PORT" in result.stderr


class Served:
    def __init__(self, env: dict[str, str], ports: dict[str, int]) -> None:
        self.env, self.ports = env, ports


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[Served]:
    ports = {"mllp": free_port(), "dicom": free_port(), "http": free_port()}
    env = clean_env(BRIDGE_DATA_DIR=str(tmp_path / "var"), BRIDGE_DATABASE_URL=database_url,
                    BRIDGE_MLLP_PORT=str(ports["mllp"]), BRIDGE_DICOM_PORT=str(ports["dicom"]),
                    BRIDGE_HTTP_PORT=str(ports["http"]))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([*BRIDGE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{ports['http']}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "bridge did not start"
            time.sleep(0.1)
        yield Served(env, ports)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # an orderly shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    logged = (tmp_path / "serve.log").read_text("utf-8")
    assert "Ґалаґан" not in logged  # no patient names above DEBUG


def test_serve_end_to_end(served: Served, tmp_path: Path) -> None:
    findscu = require_tool("findscu")
    send = run("hl7", "send", str(FIXTURES / "hl7" / "orm_o01_nw.hl7"),
               str(FIXTURES / "hl7" / "bad_missing_pid3.hl7"),
               "--port", str(served.ports["mllp"]), env=served.env)
    assert send.returncode == 1  # one message was refused, so the command says so
    assert "orm_o01_nw.hl7: AA" in send.stdout
    assert "bad_missing_pid3.hl7: AE" in send.stdout
    assert "ERR||PID^1^3|101^" in send.stdout

    out = tmp_path / "rsp"
    out.mkdir()
    query = subprocess.run([findscu, "-W", "-X", "-od", str(out), "-aec", "BRIDGE",
                            "-k", "AccessionNumber", "-k", "PatientName", "-k", "PatientID",
                            "-k", "(0040,0100)[0].Modality=CT",
                            "127.0.0.1", str(served.ports["dicom"])],
                           capture_output=True, text=True, timeout=60)
    assert query.returncode == 0, query.stderr
    import pydicom

    [response] = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert response.AccessionNumber == "ACC1001"
    assert response.PatientID == "P10001"
    assert str(response.PatientName).startswith("Ґалаґан^Олена")

    token = run("token", "create", "--role", "viewer", env=served.env)
    assert token.returncode == 0
    headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
    base = f"http://127.0.0.1:{served.ports['http']}"
    assert httpx.get(f"{base}/api/worklist").status_code == 401
    items = httpx.get(f"{base}/api/worklist", headers=headers).json()
    assert "ACC1001" in str(items)
    messages = httpx.get(f"{base}/api/messages", headers=headers).json()
    assert "ORM0001" in str(messages) and "BAD0001" in str(messages)

    listing = run("worklist", "list", env=served.env)
    assert listing.returncode == 0 and "ACC1001" in listing.stdout

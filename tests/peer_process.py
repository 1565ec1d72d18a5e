"""A server process a test runs as a real peer (Orthanc, sekmet-fhir): started on fixed
ports and data, stopped gracefully or killed (a crash), restarted on the same ports and data
to simulate a peer that is down for a while."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

START_TIMEOUT = 60.0


def free_port() -> int:
    """A port free now on 127.0.0.1 (for peers that cannot bind port 0 themselves)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PeerProcess:
    """Subclasses say how to run the server (:meth:`_command`), how to reach it
    (:meth:`_new_client`) and which HTTP path answers once it is up (``health_path``)."""

    name = "peer"
    health_path = "/"
    stop_timeout = 30.0

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self.http = self._new_client()

    def _new_client(self) -> httpx.Client:
        raise NotImplementedError

    def _command(self) -> tuple[list[str], Path | None, dict[str, str] | None]:
        """``(argv, working directory, environment)``; None keeps the test's own."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart) on the same ports and data; returns once it answers."""
        if self.running:
            return
        argv, cwd, env = self._command()
        log = self.log_path.open("ab")  # a pipe nobody reads would block the server
        try:
            self._proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()  # the child holds its own descriptor
        self._wait_until_up()

    def stop(self, *, kill: bool = False) -> None:
        """Graceful stop (SIGTERM, as systemd does; SIGKILL if it hangs), or a crash with
        ``kill=True``. Ports and data stay for :meth:`start`."""
        # Drop keep-alive connections: a pooled socket to a stopped server fails oddly, and
        # an idle one can hold a server's shutdown for seconds.
        self.http.close()
        self.http = self._new_client()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(self.stop_timeout)

    def close(self) -> None:
        # Killed, not stopped: a graceful stop can take seconds, and the data is thrown away
        # with the test.
        self.stop(kill=True)
        self.http.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if self.http.get(self.health_path, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop(kill=True)
        raise TimeoutError(f"{self.name} did not answer {self.health_path} in "
                           f"{START_TIMEOUT} s:\n{self.log_tail()}")

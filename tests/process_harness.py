"""``bridge serve`` as its own process, for the tests that kill it: start, wait until it
answers, ``kill -9``, start again on the same ports, data folder and database."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port

BRIDGE = [sys.executable, "-m", "bridge"]


class BridgeProcess:
    def __init__(self, data_dir: Path, database_url: str, **settings: str) -> None:
        self.ports = {"mllp": free_port(), "dicom": free_port(), "http": free_port()}
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        self.env.update(BRIDGE_DATA_DIR=str(data_dir), BRIDGE_DATABASE_URL=database_url,
                        BRIDGE_MLLP_PORT=str(self.ports["mllp"]),
                        BRIDGE_DICOM_PORT=str(self.ports["dicom"]),
                        BRIDGE_HTTP_PORT=str(self.ports["http"]), BRIDGE_LOG_LEVEL="WARNING",
                        **settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"serve-{self.starts}.log"

    def start(self, timeout: float = 90.0) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([*BRIDGE, "serve"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"bridge exited: {self.log_path.read_text('utf-8')}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.ports['http']}/health",
                             timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("bridge did not start in time")
            time.sleep(0.05)

    def kill(self) -> None:
        """``kill -9``: no shutdown of any kind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """An orderly stop (SIGTERM); its exit status."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return int(self.proc.returncode)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise


@contextmanager
def bridge_process(data_dir: Path, database_url: str, **settings: str
                   ) -> Iterator[BridgeProcess]:
    process = BridgeProcess(data_dir, database_url, **settings)
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


def kill_at_random_moments(bridge: BridgeProcess, done: Callable[[], int], total: int,
                           rng: random.Random, kills: int) -> None:
    """``kill -9`` the bridge ``kills`` times, each at a random point between 10 % and 90 % of
    the ``total`` items its senders must get answered (``done()`` counts the answered), then
    start it again on the same ports and data."""
    for _ in range(kills):
        target = rng.uniform(0.1, 0.9) * total
        while done() < target and done() < total:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        bridge.kill()
        bridge.start()

"""The console secret: ``BRIDGE_CONSOLE_SECRET`` when set, else a random key the bridge makes
once and keeps in ``<data_dir>/console.key`` (readable by the bridge only), so links and
logins outlive a restart on one machine. Bridges behind one balancer must be given the same
secret: each would otherwise make its own, and refuse the others' links.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from bridge.config.settings import ConfigError, Settings

_cache: dict[Path, bytes] = {}


def console_secret(settings: Settings) -> bytes:
    configured = settings.console_secret.get_secret_value()
    if configured:
        if len(configured) < 32:
            raise ConfigError("console_secret: use at least 32 characters (or leave it empty "
                              "for a key kept in the data folder)")
        return configured.encode("utf-8")
    path = settings.data_dir / "console.key"
    if path not in _cache:
        _cache[path] = _kept_key(path)
    return _cache[path]


def _kept_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        spool = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(spool, path)  # first writer wins; a racing second keeps the first's key
        except FileExistsError:
            pass
        finally:
            os.unlink(spool)
    text = path.read_text().strip()
    if len(text) < 32:
        raise ConfigError(f"{path}: the console key is too short; delete it to make a new one")
    return text.encode("ascii")

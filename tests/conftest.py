"""Shared fixtures: databases (SQLite and PostgreSQL), settings, free ports, peers.

Every test that takes ``engine`` (or anything built on it) runs twice: on SQLite and on
PostgreSQL (``BRIDGE_TEST_POSTGRES_URL``). A missing peer skips on a developer's machine but
fails when ``BRIDGE_REQUIRE_PEERS=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings, load_settings
from bridge.store.db import make_engine, make_session_factory
from bridge.store.migrate import upgrade
from tests.peer_process import free_port  # noqa: F401 (tests import it from here)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REQUIRE_PEERS = os.environ.get("BRIDGE_REQUIRE_PEERS") == "1"


def missing_peer(reason: str) -> None:
    """Skip for a missing peer, or fail when CI requires every peer."""
    if REQUIRE_PEERS:
        pytest.fail(f"required peer missing: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_peer(f"{name} not installed (Debian package dcmtk)")
    assert path is not None
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    base = os.environ.get("BRIDGE_TEST_POSTGRES_URL")
    if not base:
        missing_peer("BRIDGE_TEST_POSTGRES_URL not set")
    assert base is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        mllp_port=0,
        dicom_port=0,
        http_port=0,
    )


def hl7_fixture(name: str) -> bytes:
    return (FIXTURES / "hl7" / name).read_bytes()

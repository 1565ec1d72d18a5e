"""Every error kind has an answer in every protocol; the pure layers do no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import bridge.errors as errors
from bridge.config.settings import PROJECT_ROOT

IO_MODULES = {"socket", "sqlalchemy", "asyncio", "httpx", "pynetdicom", "fastapi", "uvicorn",
              "requests", "subprocess", "urllib", "bridge.store", "bridge.services",
              "bridge.adapters"}


def test_every_error_kind_has_an_answer() -> None:
    kinds = [obj for obj in vars(errors).values()
             if isinstance(obj, type) and issubclass(obj, errors.BridgeError)]
    assert len(kinds) >= 6
    for kind in kinds:
        assert kind in errors.ANSWERS, kind.__name__
        answer = errors.ANSWERS[kind]
        assert answer.hl7_ack in ("AE", "AR")
        assert 400 <= answer.http_status < 600
        assert answer.dimse_status != 0


def test_unknown_exceptions_are_internal_errors() -> None:
    assert errors.answer_for(KeyError("x")).http_status == 500


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_mapping_and_domain_import_nothing_that_does_io() -> None:
    files = [PROJECT_ROOT / "bridge" / "domain.py",
             *sorted((PROJECT_ROOT / "bridge" / "mapping").glob("*.py"))]
    for path in files:
        for name in _imports(path):
            assert not any(name == io or name.startswith(io + ".") for io in IO_MODULES), (
                f"{path.name} imports {name}")

"""Reading the declarative tables in ``mappings/``: one YAML file, one checked mapping.

Each capability reads and checks its own tables with these (read once at start, then
frozen): :mod:`bridge.mapping.hl7.tables`, :mod:`bridge.mapping.fhir.tables`, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: libyaml's safe loader when PyYAML was built with it (ten times faster on the larger
#: tables, e.g. the 600 rows of PS3.15 Table E.1-1), else the pure-Python one; both safe.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TableError(Exception):
    """A mapping table is malformed; the message names the file and key."""


def read_table(path: Path) -> dict[str, Any]:
    """One YAML table: a mapping at the top level, or a :class:`TableError` naming the file."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TableError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise TableError(f"{path}: expected a mapping at the top level")
    return data

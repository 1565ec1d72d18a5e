"""The HL7 v2 tables in ``mappings/hl7v2/``: messages, fields, order status, priority and
stations, read and checked once at start, then frozen."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.domain import StepStatus
from bridge.mapping.hl7.message import FieldPaths, Reader, compile_path, compile_reader
from bridge.mapping.tables import TableError, read_table

PathList = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StationRule:
    station_ae: str
    modality: str | None = None
    location: str | None = None

    def matches(self, modality: str | None, location: str | None) -> bool:
        if self.modality is not None and self.modality != (modality or ""):
            return False
        return self.location is None or fnmatch.fnmatchcase(location or "", self.location)


@dataclass(frozen=True, slots=True)
class HL7Tables:
    versions: frozenset[str]
    processing_ids: frozenset[str]
    handlers: dict[str, str]
    fields: dict[str, dict[str, PathList]]
    order_status: dict[str, StepStatus]
    priority: dict[str, str]
    stations: tuple[StationRule, ...]
    #: ``referrals.yaml``: performer_kind, priority, rri_status, result_status (code → value).
    referrals: dict[str, dict[str, str]] = field(default_factory=dict)
    #: ``fields`` with every path parsed, read by the mapping for each message.
    compiled: dict[str, dict[str, FieldPaths]] = field(init=False, repr=False, compare=False)
    #: Readers of ``compiled`` groups (:meth:`reader`), made on first use.
    _readers: dict[tuple[str, frozenset[str], frozenset[str], bool], Reader] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", {
            group: {name: tuple(compile_path(path) for path in paths)
                    for name, paths in entries.items()}
            for group, entries in self.fields.items()
        })
        object.__setattr__(self, "_readers", {})

    def station_for(self, modality: str | None, location: str | None) -> str | None:
        for rule in self.stations:
            if rule.matches(modality, location):
                return rule.station_ae
        return None

    def paths(self, group: str, name: str) -> PathList:
        return self.fields[group].get(name, ())

    def compiled_paths(self, group: str, name: str) -> FieldPaths:
        return self.compiled[group].get(name, ())

    def reader(self, group: str, skip: frozenset[str] = frozenset(),
               raw: frozenset[str] = frozenset(), hl7_null: bool = False) -> Reader:
        """A compiled reader (:func:`compile_reader`) of a group's entries but ``skip``."""
        key = (group, skip, raw, hl7_null)
        found = self._readers.get(key)
        if found is None:
            found = self._readers[key] = compile_reader(self.compiled[group], skip=skip,
                                                        raw=raw, hl7_null=hl7_null)
        return found


HANDLERS = {"patient", "merge", "change_identifier", "order", "referral", "result"}


def load_hl7_tables(mappings_dir: Path) -> HL7Tables:
    base = mappings_dir / "hl7v2"
    messages = read_table(base / "messages.yaml")
    handlers = {str(k).upper(): str(v) for k, v in messages.get("handlers", {}).items()}
    for key, handler in handlers.items():
        if handler not in HANDLERS:
            raise TableError(f"{base / 'messages.yaml'}: {key}: unknown handler {handler!r}")
    fields = {
        group: {name: _paths(value) for name, value in (entries or {}).items()}
        for group, entries in read_table(base / "fields.yaml").items()
    }
    status_table: dict[str, StepStatus] = {}
    for key, value in read_table(base / "order_status.yaml").items():
        try:
            status_table[str(key).upper()] = StepStatus(str(value))
        except ValueError:
            raise TableError(
                f"{base / 'order_status.yaml'}: {key}: unknown status {value!r}") from None
    stations = tuple(
        StationRule(station_ae=str(rule["station_ae"]), modality=rule.get("modality"),
                    location=rule.get("location"))
        for rule in read_table(base / "stations.yaml").get("rules", [])
    )
    return HL7Tables(
        versions=frozenset(str(v) for v in messages.get("versions", [])),
        processing_ids=frozenset(str(v) for v in messages.get("processing_ids", [])),
        handlers=handlers,
        fields=fields,
        order_status=status_table,
        priority={str(k).upper(): str(v) for k, v in read_table(base / "priority.yaml").items()},
        stations=stations,
        referrals=_referral_tables(base / "referrals.yaml"),
    )


def _referral_tables(path: Path) -> dict[str, dict[str, str]]:
    """``referrals.yaml`` (optional: a site without HL7 referrals may leave it out)."""
    if not path.exists():
        return {}
    return {str(name): {str(k).upper() if name != "rri_status" else str(k): str(v)
                        for k, v in (entries or {}).items()}
            for name, entries in read_table(path).items()}


def _paths(value: Any) -> PathList:
    values = value if isinstance(value, list) else [value]
    for path in values:
        segment, _, rest = str(path).partition("-")
        if len(segment) != 3 or not all(part.isdigit() for part in rest.split(".")):
            raise TableError(f"bad field path {path!r}")
        try:
            compile_path(str(path))
        except ValueError:  # digits int() does not read, such as "²"
            raise TableError(f"bad field path {path!r}") from None
    return tuple(str(v) for v in values)

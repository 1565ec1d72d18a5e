"""The declarative FHIR maps in ``mappings/fhir/``, read and checked once at start, then frozen.

Each table says one thing (statuses, priorities, identifier types and issuers, performers →
stations, codes → modality, coding systems ↔ DICOM designators, gender ↔ sex); the mapping
code in :mod:`bridge.mapping.fhir.service_request` and :mod:`bridge.mapping.fhir.patient`
only asks these questions, so a site changes behaviour by editing YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.domain import StepStatus
from bridge.mapping.tables import TableError, read_table

#: Every ServiceRequest.status code FHIR defines (request-status); what the bridge writes.
FHIR_REQUEST_STATUSES = frozenset(
    {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"})
#: Every ServiceRequest.priority code FHIR defines (request-priority).
FHIR_PRIORITIES = frozenset({"routine", "urgent", "asap", "stat"})
ORDER_KEYS = frozenset({"accession", "placer", "filler"})


@dataclass(frozen=True, slots=True)
class StationRule:
    station_ae: str
    reference: str | None = None
    #: ``(system, value)``
    identifier: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FhirTables:
    status_to_steps: dict[str, StepStatus]
    status_from_steps: dict[str, str]
    initial_only: frozenset[str]
    order_intents: frozenset[str]
    priority_to_dicom: dict[str, str]
    priority_from_dicom: dict[str, str]
    type_system: str
    order_types: dict[str, str]
    order_systems: dict[str, str]
    #: Identifier.system → issuer, and issuer → the system written for it.
    system_to_issuer: dict[str, str]
    issuer_to_system: dict[str, str]
    accession_system: str
    patient_primary_types: tuple[str, ...]
    device_ae_title_systems: tuple[str, ...]
    stations: tuple[StationRule, ...]
    station_by_modality: dict[str, str]
    dicom_system: str
    modalities: frozenset[str]
    modality_codes: dict[tuple[str, str], str]
    system_to_scheme: dict[str, str]
    scheme_to_system: dict[str, str]
    gender_to_sex: dict[str, str]
    sex_to_gender: dict[str, str]

    def issuer_for(self, system: str | None) -> str:
        """The issuer the domain keeps for an Identifier.system ('' for none)."""
        if not system:
            return ""
        return self.system_to_issuer.get(system, system)

    def system_for(self, issuer: str) -> str | None:
        """The Identifier.system written for an issuer; None when it has no URI form."""
        if not issuer:
            return None
        if issuer in self.issuer_to_system:
            return self.issuer_to_system[issuer]
        return issuer if ":" in issuer else None

    def scheme_for(self, system: str | None) -> str:
        if not system:
            return ""
        return self.system_to_scheme.get(system, system)

    def coding_system_for(self, scheme: str | None) -> str | None:
        if not scheme:
            return None
        if scheme in self.scheme_to_system:
            return self.scheme_to_system[scheme]
        return scheme if ":" in scheme else None

    def station_for_performer(self, reference: str | None,
                              identifier: tuple[str, str] | None) -> str | None:
        for rule in self.stations:
            if reference is not None and rule.reference == reference:
                return rule.station_ae
            if identifier is not None and rule.identifier == identifier:
                return rule.station_ae
        return None


def load_fhir_tables(mappings_dir: Path) -> FhirTables:
    """Read ``mappings_dir/fhir``; :class:`TableError` names the file and key at fault.

    One reader per file, each checking its own table and naming the fields it fills."""
    base = mappings_dir / "fhir"
    return FhirTables(**_statuses(base / "service_request_status.yaml"),
                      **_priorities(base / "priority.yaml"),
                      **_identifiers(base / "identifiers.yaml"),
                      **_performers(base / "performers.yaml"),
                      **_modalities(base / "modality.yaml"),
                      **_coding_systems(base / "coding_systems.yaml"),
                      **_patient(base / "patient.yaml"))


def _statuses(status_file: Path) -> dict[str, Any]:
    status = read_table(status_file)
    to_steps = {str(k): _step_status(v, status_file, k)
                for k, v in _mapping(status, "to_steps", status_file).items()}
    from_steps: dict[str, str] = {}
    for key, value in _mapping(status, "from_steps", status_file).items():
        _step_status(key, status_file, key)
        if str(value) not in FHIR_REQUEST_STATUSES:
            raise TableError(f"{status_file}: from_steps.{key}: {value!r} is not a FHIR "
                             "ServiceRequest status")
        from_steps[str(key)] = str(value)
    missing = {s.value for s in StepStatus} - set(from_steps)
    if missing:
        raise TableError(f"{status_file}: from_steps lacks {sorted(missing)}")
    return {"status_to_steps": to_steps, "status_from_steps": from_steps,
            "initial_only": frozenset(str(s) for s in status.get("initial_only") or []),
            "order_intents": frozenset(str(s) for s in status.get("order_intents")
                                       or ["order"])}


def _priorities(priority_file: Path) -> dict[str, Any]:
    priority = read_table(priority_file)
    to_dicom = {str(k): str(v) for k, v in _mapping(priority, "to_dicom", priority_file).items()}
    from_dicom = {str(k).upper(): str(v)
                  for k, v in _mapping(priority, "from_dicom", priority_file).items()}
    for key, value in from_dicom.items():
        if value not in FHIR_PRIORITIES:
            raise TableError(f"{priority_file}: from_dicom.{key}: {value!r} is not a FHIR "
                             "priority")
    return {"priority_to_dicom": to_dicom, "priority_from_dicom": from_dicom}


def _identifiers(id_file: Path) -> dict[str, Any]:
    identifiers = read_table(id_file)
    order_types = {str(k): str(v) for k, v in _mapping(identifiers, "order_types",
                                                       id_file).items()}
    order_systems = {str(k): str(v) for k, v in _mapping(identifiers, "order_systems",
                                                         id_file).items()}
    for key, value in (order_types | order_systems).items():
        if value not in ORDER_KEYS:
            raise TableError(f"{id_file}: {key}: {value!r} is not one of {sorted(ORDER_KEYS)}")
    system_to_issuer = {str(k): str(v) for k, v in _mapping(identifiers, "issuers",
                                                            id_file).items()}
    issuer_to_system: dict[str, str] = {}
    for system, issuer in system_to_issuer.items():
        issuer_to_system.setdefault(issuer, system)
    return {"type_system": str(identifiers.get("type_system") or ""),
            "order_types": order_types, "order_systems": order_systems,
            "system_to_issuer": system_to_issuer, "issuer_to_system": issuer_to_system,
            "accession_system": str(identifiers.get("accession_system") or ""),
            "patient_primary_types": tuple(str(t) for t in
                                           identifiers.get("patient_primary_types") or [])}


def _performers(perf_file: Path) -> dict[str, Any]:
    performers = read_table(perf_file)
    rules = []
    for n, rule in enumerate(performers.get("stations") or []):
        if not isinstance(rule, dict) or "station_ae" not in rule:
            raise TableError(f"{perf_file}: stations[{n}]: needs station_ae")
        ident = rule.get("identifier")
        parsed: tuple[str, str] | None = None
        if ident is not None:
            system, sep, value = str(ident).partition("|")
            if not sep or not value:
                raise TableError(f"{perf_file}: stations[{n}].identifier: use system|value")
            parsed = (system, value)
        if rule.get("reference") is None and parsed is None:
            raise TableError(f"{perf_file}: stations[{n}]: needs reference or identifier")
        rules.append(StationRule(station_ae=_ae(rule["station_ae"], perf_file),
                                 reference=rule.get("reference"), identifier=parsed))
    by_modality = {str(k).upper(): _ae(v, perf_file)
                   for k, v in _mapping(performers, "by_modality", perf_file).items()}
    return {"device_ae_title_systems": tuple(str(s) for s in
                                             performers.get("device_ae_title_systems") or []),
            "stations": tuple(rules), "station_by_modality": by_modality}


def _modalities(mod_file: Path) -> dict[str, Any]:
    modality = read_table(mod_file)
    modality_codes: dict[tuple[str, str], str] = {}
    for key, value in _mapping(modality, "codes", mod_file).items():
        system, sep, code = str(key).partition("|")
        if not sep or not code:
            raise TableError(f"{mod_file}: codes.{key}: use system|code")
        modality_codes[(system, code)] = str(value).upper()
    return {"dicom_system": str(modality.get("dicom_system") or ""),
            "modalities": frozenset(str(m).upper() for m in modality.get("modalities") or []),
            "modality_codes": modality_codes}


def _coding_systems(schemes_file: Path) -> dict[str, Any]:
    system_to_scheme = {str(k): str(v) for k, v in read_table(schemes_file).items()}
    scheme_to_system: dict[str, str] = {}
    for system, scheme in system_to_scheme.items():
        scheme_to_system.setdefault(scheme, system)
    return {"system_to_scheme": system_to_scheme, "scheme_to_system": scheme_to_system}


def _patient(patient_file: Path) -> dict[str, Any]:
    patient = read_table(patient_file)
    return {"gender_to_sex": {str(k): str(v) for k, v in _mapping(patient, "to_dicom",
                                                                  patient_file).items()},
            "sex_to_gender": {str(k).upper(): str(v) for k, v in _mapping(
                patient, "from_dicom", patient_file).items()}}


def _mapping(data: dict[str, Any], key: str, path: Path) -> dict[Any, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise TableError(f"{path}: {key}: expected a mapping")
    return value


def _step_status(value: Any, path: Path, key: Any) -> StepStatus:
    try:
        return StepStatus(str(value))
    except ValueError:
        raise TableError(f"{path}: {key}: unknown step status {value!r}") from None


def _ae(value: Any, path: Path) -> str:
    text = str(value)
    if not text or len(text) > 16 or not text.isascii() or "\\" in text:
        raise TableError(f"{path}: {value!r} is not an AE title")
    return text

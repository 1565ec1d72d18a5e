"""Patient ↔ the domain's patient, driven by ``mappings/fhir``. Pure: no I/O.

In: identifiers (system → issuer by the table, type from Identifier.type), the official
name as DICOM PN, gender → sex by the table, birthDate. The primary identifier (DICOM
PatientID) is chosen as HL7 chooses it: the primary authority's first, else by type.
Values FHIR has and the domain does not (telecom, address, a partial birth date...) are
kept in the JSON last received and returned as sent.

Out: like :mod:`bridge.mapping.fhir.service_request`, the JSON last received with the
domain's values where they differ: identifiers (every one the patient holds, in order),
name, gender, birthDate; a patient merged away (ADT A40) is ``active: false`` with a
``replaced-by`` link to the survivor. ``meta.versionId`` is ``<FHIR writes>.<digest of the
domain values>``.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.domain import Identifier, PatientData
from bridge.errors import MappingFailed
from bridge.mapping.fhir.datatypes import (
    JSONDict,
    checked,
    dicom_date_to_fhir,
    drop_unreferenced_contained,
    fhir_date_to_dicom,
    human_name_to_pn,
    identifier_token,
    instant,
    make_identifier,
    pn_to_human_name,
)
from bridge.mapping.fhir.outcome import InvalidCode
from bridge.mapping.fhir.service_request import SourceRecord
from bridge.mapping.fhir.tables import FhirTables

PATIENT = "Patient"


@dataclass(frozen=True, slots=True)
class PatientView:
    """A patient row as the database has it (not following merges: this row's own values)."""

    id: int
    updated_at: datetime
    name: str = ""
    birth_date: str | None = None
    sex: str | None = None
    #: Every identifier the patient holds, primary first: ``(value, issuer, type)``.
    identifiers: tuple[tuple[str, str, str], ...] = ()
    merged_into_id: int | None = None
    source: SourceRecord | None = field(default=None, compare=False)

    def digest(self) -> str:
        values = repr((self.name, self.birth_date, self.sex, self.identifiers,
                       self.merged_into_id))
        return hashlib.sha256(values.encode()).hexdigest()[:10]

    @property
    def version_id(self) -> str:
        return f"{self.source.counter if self.source else 0}.{self.digest()}"


def read_patient(resource: Mapping[str, Any], tables: FhirTables,
                 primary_authority: str = "") -> PatientData:
    """What a (validated) Patient says in domain terms; raises 422 naming the element."""
    identifiers = patient_identifiers(resource.get("identifier"), tables, PATIENT)
    if not identifiers:
        raise MappingFailed("the patient needs an identifier with a value (the PatientID)",
                            location=f"{PATIENT}.identifier")
    identifiers = primary_first(identifiers, tables, primary_authority)
    gender = resource.get("gender")
    sex: str | None = None
    if gender is not None:
        if str(gender) not in tables.gender_to_sex:
            raise InvalidCode(f"gender {gender!r} has no mapping", location=f"{PATIENT}.gender")
        sex = tables.gender_to_sex[str(gender)]
    name = human_name_to_pn(resource.get("name"))
    return PatientData(
        identifiers=identifiers,
        name=checked(name, 320, f"{PATIENT}.name", "name"),
        birth_date=fhir_date_to_dicom(resource.get("birthDate")),
        sex=sex,
    )


def patient_identifiers(items: Any, tables: FhirTables, root: str) -> list[Identifier]:
    """Identifiers with a value, as the domain keeps them (duplicates dropped)."""
    found: list[Identifier] = []
    seen: set[tuple[str, str]] = set()
    for n, item in enumerate(items if isinstance(items, list) else []):
        token = identifier_token(item)
        if token is None:
            continue
        where = f"{root}.identifier[{n}]"
        system, value = token
        issuer = tables.issuer_for(system) if system else _assigner(item)
        id_type = next((str(c.get("code")) for c in (item.get("type") or {}).get("coding") or []
                        if isinstance(c, Mapping) and c.get("code")), "")
        identifier = Identifier(value=checked(value, 64, f"{where}.value") or value,
                                issuer=checked(issuer, 64, f"{where}.system", "issuer") or "",
                                id_type=checked(id_type, 16, f"{where}.type", "type") or "")
        if (identifier.value, identifier.issuer) not in seen:
            seen.add((identifier.value, identifier.issuer))
            found.append(identifier)
    return found


def primary_first(identifiers: list[Identifier], tables: FhirTables,
                  primary_authority: str) -> list[Identifier]:
    """The primary authority's identifier first (as HL7), else the first of a preferred
    type (``patient_primary_types``), else the order sent."""
    def rank(identifier: Identifier) -> tuple[int, int]:
        authority = 0 if primary_authority and identifier.issuer == primary_authority else 1
        types = tables.patient_primary_types
        by_type = types.index(identifier.id_type) if identifier.id_type in types else len(types)
        return authority, by_type

    return sorted(identifiers, key=rank)


def identifier_of(identifier: Any, tables: FhirTables) -> Identifier | None:
    """A logical reference's Identifier as the domain's (value, issuer)."""
    token = identifier_token(identifier)
    if token is None:
        return None
    system, value = token
    issuer = tables.issuer_for(system) if system else _assigner(identifier)
    return Identifier(value=value, issuer=issuer)


def _assigner(identifier: Mapping[str, Any]) -> str:
    assigner = identifier.get("assigner")
    if isinstance(assigner, Mapping) and isinstance(assigner.get("display"), str):
        return str(assigner["display"]).strip()
    return ""


# -- domain → Patient ---------------------------------------------------------------------

def patient_resource(view: PatientView, tables: FhirTables) -> JSONDict:
    source = dict(view.source.resource) if view.source is not None else {}
    said = _said(source, tables)
    resource: JSONDict = {"resourceType": PATIENT, "id": str(view.id), "meta": {
        "versionId": view.version_id, "lastUpdated": instant(view.updated_at)}}
    for key, value in source.items():
        if key not in ("resourceType", "id", "meta", "link"):
            resource[key] = copy.deepcopy(value)
    resource["identifier"] = _identifiers(view, source.get("identifier"), tables)
    name = view.name or None
    if said is None or (said.name or None) != name:
        _put(resource, "name", [pn_to_human_name(name)] if pn_to_human_name(name) else None)
    if said is None or (said.sex or None) != (view.sex or None):
        _put(resource, "gender", tables.sex_to_gender.get((view.sex or "").upper()))
    if said is None or said.birth_date != view.birth_date:
        _put(resource, "birthDate", dicom_date_to_fhir(view.birth_date))
    if view.merged_into_id is not None:
        resource["active"] = False
        resource["link"] = [{"other": {"reference": f"Patient/{view.merged_into_id}"},
                             "type": "replaced-by"}]
    drop_unreferenced_contained(resource)
    return _ordered(resource)


def _said(source: Mapping[str, Any], tables: FhirTables) -> PatientData | None:
    if not source:
        return None
    try:
        return read_patient(source, tables)
    except MappingFailed:
        return None


def _identifiers(view: PatientView, sent: Any, tables: FhirTables) -> list[JSONDict]:
    """Every identifier the patient holds: as sent where the sender gave it, else built."""
    held = {(value, issuer) for value, issuer, _ in view.identifiers}
    by_key: dict[tuple[str, str], JSONDict] = {}
    for item in sent if isinstance(sent, list) else []:
        found = identifier_of(item, tables)
        if found is not None and (found.value, found.issuer) in held:
            by_key.setdefault((found.value, found.issuer), copy.deepcopy(item))
    result = []
    for value, issuer, id_type in view.identifiers:
        result.append(by_key.get((value, issuer)) or _identifier(value, issuer, id_type, tables))
    return result


def _identifier(value: str, issuer: str, id_type: str, tables: FhirTables) -> JSONDict:
    return make_identifier(value, system=tables.system_for(issuer), issuer=issuer,
                      type_code=id_type, type_system=tables.type_system)


def _put(resource: JSONDict, key: str, value: Any) -> None:
    if value is None:
        resource.pop(key, None)
    else:
        resource[key] = value


_ORDER = ("resourceType", "id", "meta", "text", "contained", "extension", "identifier",
          "active", "name", "telecom", "gender", "birthDate")


def _ordered(resource: JSONDict) -> JSONDict:
    head = {k: resource[k] for k in _ORDER if k in resource}
    return head | {k: v for k, v in resource.items() if k not in head}

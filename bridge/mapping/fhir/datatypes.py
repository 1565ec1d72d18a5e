"""FHIR data types ↔ the domain's DICOM-shaped values. Pure: no I/O.

Dates and times: the domain keeps DICOM strings in the modalities' local time
(``BRIDGE_LOCAL_TIMEZONE``), FHIR sends instants with an offset. A FHIR dateTime is turned
into that zone's wall-clock date and time; the other way, the zone's offset on that day is
written, never a silent UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from bridge.domain import CodedValue
from bridge.errors import MappingFailed

JSONDict = dict[str, Any]

_DATETIME = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")


# -- dates and times ------------------------------------------------------------------------

def fhir_date_to_dicom(value: Any) -> str | None:
    """``YYYY-MM-DD`` → ``YYYYMMDD``; a partial date (``YYYY``, ``YYYY-MM``) has no DICOM
    form and is not said (None)."""
    if not isinstance(value, str):
        return None
    found = _DATETIME.match(value)
    if found is None or found["d"] is None:
        return None
    return f"{found['y']}{found['m']}{found['d']}"


def dicom_date_to_fhir(value: str | None) -> str | None:
    if not value or len(value) != 8 or not value.isdigit():
        return None
    return f"{value[:4]}-{value[4:6]}-{value[6:]}"


def fhir_datetime_to_local(value: Any, zone: ZoneInfo) -> tuple[str | None, str | None]:
    """A FHIR dateTime → (DICOM date, DICOM time) in ``zone``. A date alone gives no time;
    a year or month alone gives neither; a time without offset is taken as local."""
    if not isinstance(value, str):
        return None, None
    found = _DATETIME.match(value)
    if found is None or found["d"] is None:
        return None, None
    day = f"{found['y']}{found['m']}{found['d']}"
    if found["H"] is None:
        return day, None
    fraction = (found["f"] or "")[:6]
    moment = datetime(int(found["y"]), int(found["m"]), int(found["d"]), int(found["H"]),
                      int(found["M"]), int(found["S"] or 0),
                      int(fraction.ljust(6, "0")) if fraction else 0)
    tz = found["tz"]
    if tz:
        offset = timedelta(0) if tz == "Z" else _offset(tz)
        moment = moment.replace(tzinfo=timezone(offset)).astimezone(zone)
    text = moment.strftime("%H%M%S")
    if fraction and moment.microsecond:
        text += "." + f"{moment.microsecond:06d}"[:len(fraction)]
    return moment.strftime("%Y%m%d"), text


def local_to_fhir_datetime(day: str | None, clock: str | None, zone: ZoneInfo) -> str | None:
    """DICOM date (+ time) in ``zone`` → a FHIR dateTime with that zone's offset."""
    if not day or len(day) != 8 or not day.isdigit():
        return None
    if not clock:
        return f"{day[:4]}-{day[4:6]}-{day[6:]}"
    parsed = _dicom_time(clock)
    if parsed is None:
        return f"{day[:4]}-{day[4:6]}-{day[6:]}"
    moment = datetime.combine(date(int(day[:4]), int(day[4:6]), int(day[6:])), parsed,
                              tzinfo=zone)
    return moment.isoformat(timespec="milliseconds" if parsed.microsecond else "seconds")


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC (``meta.lastUpdated``); a naive value is UTC (SQLite)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dicom_time(clock: str) -> time | None:
    digits, _, fraction = clock.partition(".")
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        return None
    hour, minute, second = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    micro = int(fraction[:6].ljust(6, "0")) if fraction.isdigit() else 0
    return time(hour, minute, second, micro)


def _offset(text: str) -> timedelta:
    sign = -1 if text[0] == "-" else 1
    return sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6]))


# -- names ----------------------------------------------------------------------------------

def human_name_to_pn(names: Any) -> str | None:
    """The official (else usual, else first current) HumanName as DICOM PN
    ``Family^Given^Middle^Prefix^Suffix``; None when no name is given."""
    if not isinstance(names, list) or not names:
        return None
    chosen = _preferred_name([n for n in names if isinstance(n, Mapping)])
    if chosen is None:
        return None
    family = _text(chosen.get("family"))
    given = [_text(g) for g in chosen.get("given") or [] if _text(g)]
    prefix = " ".join(_text(p) for p in chosen.get("prefix") or [] if _text(p))
    suffix = " ".join(_text(s) for s in chosen.get("suffix") or [] if _text(s))
    if not family and not given and chosen.get("text"):
        family = _text(chosen.get("text"))  # only a display form: keep it whole
    parts = [family, given[0] if given else "", " ".join(given[1:]), prefix, suffix]
    return "^".join(p.replace("^", " ") for p in parts).rstrip("^")


def _preferred_name(names: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for use in ("official", "usual"):
        for name in names:
            if name.get("use") == use:
                return name
    current = [n for n in names if n.get("use") not in ("old", "maiden")] or names
    return current[0] if current else None


def pn_to_human_name(pn: str | None) -> JSONDict | None:
    if not pn:
        return None
    family, given, middle, prefix, suffix = (pn.split("=", 1)[0].split("^") + [""] * 5)[:5]
    name: JSONDict = {"use": "official"}
    if family:
        name["family"] = family
    given_names = [g for g in (given, *middle.split(" ")) if g]
    if given_names:
        name["given"] = given_names
    if prefix:
        name["prefix"] = prefix.split(" ")
    if suffix:
        name["suffix"] = suffix.split(" ")
    return name if len(name) > 1 else None


def pn_display(pn: str | None) -> str | None:
    """A PN for people: ``Family^Given^Middle`` → ``Given Middle Family``."""
    if not pn:
        return None
    family, given, middle, prefix, suffix = (pn.split("=", 1)[0].split("^") + [""] * 5)[:5]
    text = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    return text or None


def display_to_pn(display: Any) -> str | None:
    """A free-text person (a Reference's display) kept whole as the PN's family component:
    splitting it into parts would guess."""
    text = _text(display)
    return text.replace("^", " ").replace("\\", " ") if text else None


# -- codes ----------------------------------------------------------------------------------

def codings(concept: Any) -> Iterator[Mapping[str, Any]]:
    """The codings of a CodeableConcept (or a list of them) that have a code."""
    concepts = concept if isinstance(concept, list) else [concept]
    for item in concepts:
        if isinstance(item, Mapping):
            for coding in item.get("coding") or []:
                if isinstance(coding, Mapping) and _text(coding.get("code")):
                    yield coding


def concept_text(concept: Any) -> str | None:
    """A CodeableConcept for people: its text, else its first coding's display, else code."""
    if not isinstance(concept, Mapping):
        return None
    if _text(concept.get("text")):
        return _text(concept.get("text"))
    for coding in concept.get("coding") or []:
        if isinstance(coding, Mapping):
            for key in ("display", "code"):
                if _text(coding.get(key)):
                    return _text(coding.get(key))
    return None


def coded_value(concept: Any, system_to_scheme: Mapping[str, str]) -> CodedValue | None:
    """The first coding of a CodeableConcept as a DICOM code (designator from the table,
    else the system itself when it fits the column)."""
    for coding in codings(concept):
        system = _text(coding.get("system"))
        scheme = system_to_scheme.get(system, system) if system else ""
        if len(scheme) > 64:
            scheme = ""
        meaning = _text(coding.get("display")) or (
            _text(concept.get("text")) if isinstance(concept, Mapping) else "")
        return CodedValue(code=_text(coding.get("code")), scheme=scheme, meaning=meaning)
    return None


def coding(system: str | None, code: str, display: str | None = None) -> JSONDict:
    found: JSONDict = {}
    if system:
        found["system"] = system
    found["code"] = code
    if display:
        found["display"] = display
    return found


# -- references and identifiers ----------------------------------------------------------

def make_identifier(value: str, *, system: str | None, issuer: str, type_code: str,
               type_system: str | None) -> JSONDict:
    """An Identifier: typed when a code is given (v2-0203: MR, ACSN, PLAC, ...); an issuer
    the tables have no system for is kept as the assigner's display."""
    made: JSONDict = {}
    if type_code:
        made["type"] = {"coding": [coding(type_system, type_code)]}
    if system:
        made["system"] = system
    made["value"] = value
    if issuer and not system:
        made["assigner"] = {"display": issuer}
    return made


def reference_parts(reference: Any) -> tuple[str, str] | None:
    """``Patient/12`` or ``http://host/fhir/Patient/12[/_history/3]`` → (``Patient``, ``12``)."""
    if not isinstance(reference, str) or not reference or reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-2].isalpha():
        return None
    return parts[-2], parts[-1]


def identifier_token(identifier: Any) -> tuple[str, str] | None:
    """(system, value) of an Identifier with a value; system '' when none is given."""
    if not isinstance(identifier, Mapping):
        return None
    value = _text(identifier.get("value"))
    if not value:
        return None
    return _text(identifier.get("system")), value


def type_codes(identifier: Mapping[str, Any], system: str) -> list[str]:
    """The codes of Identifier.type in ``system`` (or without a system)."""
    found = []
    for item in codings(identifier.get("type")):
        if not item.get("system") or item.get("system") == system:
            found.append(_text(item.get("code")))
    return found


def contained(resource: Mapping[str, Any], reference: Any) -> Mapping[str, Any] | None:
    """The contained resource a ``#id`` reference names."""
    if not isinstance(reference, str) or not reference.startswith("#"):
        return None
    for item in resource.get("contained") or []:
        if isinstance(item, Mapping) and item.get("id") == reference[1:]:
            return item
    return None


def drop_unreferenced_contained(resource: JSONDict) -> None:
    """Remove contained resources nothing refers to any more (FHIR invariant dom-3), e.g.
    a contained subject once the subject is rewritten to ``Patient/[id]``."""
    items = resource.get("contained")
    if not isinstance(items, list):
        return
    outside = {k: v for k, v in resource.items() if k != "contained"}
    wanted = _local_references(outside)
    kept: list[Any] = []
    while True:
        kept = [c for c in items if isinstance(c, Mapping) and f"#{c.get('id')}" in wanted]
        more = wanted | _local_references(kept)
        if more == wanted:
            break
        wanted = more
    if kept:
        resource["contained"] = kept
    else:
        resource.pop("contained", None)


def _local_references(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item.startswith("#"):
                found.add(item)
            else:
                found |= _local_references(item)
    elif isinstance(value, list):
        for item in value:
            found |= _local_references(item)
    return found


def checked(value: str | None, limit: int, where: str, what: str = "value") -> str | None:
    """``value`` if it fits its database column; else a 422 naming the element."""
    if value is not None and len(value) > limit:
        raise MappingFailed(f"{what} longer than {limit} characters", location=where)
    return value


def first(items: Sequence[Any] | None) -> Any:
    return items[0] if items else None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""

"""FHIR search parameters → a typed query. Pure: no I/O.

Supported per resource type (the CapabilityStatement is built from :data:`SEARCH_PARAMS`):
``_id``, ``identifier`` (token ``[system]|value``), ``subject``/``patient`` (reference),
``status`` (token), ``_lastUpdated`` (date with ``eq ge gt le lt``), plus ``_count``,
``_offset`` (paging), ``_include``. Repeating a parameter ANDs it; commas inside one value OR
it. A date is a range by its precision (``2024-05`` is all of May): ``ge`` is from its start,
``gt`` from its end, ``le`` to its end, ``lt`` to its start. A date or time without offset is
in ``BRIDGE_LOCAL_TIMEZONE``.

Unknown parameters are ignored (and left out of the ``self`` link, as FHIR asks) unless the
client sends ``Prefer: handling=strict``; a known parameter with a bad value or an unknown
modifier is always a 400, since ignoring it would widen the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from bridge.errors import Rejected

DEFAULT_COUNT = 50
MAX_COUNT = 1000
#: Parameters every search takes besides the resource's own.
RESULT_PARAMS = frozenset({"_count", "_offset", "_include", "_format", "_pretty",
                           "_summary", "_elements", "_total"})

#: name → (FHIR search parameter type, documentation), per resource type.
SEARCH_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    "Patient": {
        "_id": ("token", "Logical id (the patients row id)"),
        "identifier": ("token", "A patient identifier: [system]|value"),
        "_lastUpdated": ("date", "When the patient last changed"),
    },
    "ServiceRequest": {
        "_id": ("token", "Logical id (the orders row id)"),
        "identifier": ("token", "Placer, filler or accession number: [system]|value"),
        "subject": ("reference", "The patient: Patient/[id]"),
        "patient": ("reference", "The patient: Patient/[id]"),
        "status": ("token", "ServiceRequest status"),
        "_lastUpdated": ("date", "When the order last changed"),
    },
}
#: ``_include`` values accepted per resource type.
INCLUDES: dict[str, frozenset[str]] = {
    "Patient": frozenset(),
    "ServiceRequest": frozenset({"ServiceRequest:subject", "ServiceRequest:patient"}),
}

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")


@dataclass(frozen=True, slots=True)
class Token:
    """``system|value``: ``system`` None matches any system, '' only values without one."""

    system: str | None
    value: str


@dataclass(frozen=True, slots=True)
class Bound:
    """``column >= moment`` (``op`` ``ge``) or ``column < moment`` (``op`` ``lt``), in UTC."""

    op: str
    moment: datetime


@dataclass(slots=True)
class SearchQuery:
    resource_type: str
    ids: list[list[str]] = field(default_factory=list)
    identifiers: list[list[Token]] = field(default_factory=list)
    #: Patient ids (the ``Patient/`` prefix removed).
    subjects: list[list[str]] = field(default_factory=list)
    statuses: list[list[str]] = field(default_factory=list)
    last_updated: list[Bound] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    includes: list[str] = field(default_factory=list)
    #: The parameters applied (for the ``self`` link) and those ignored.
    used: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def used_without_paging(self) -> list[tuple[str, str]]:
        """The applied parameters but ``_count`` and ``_offset`` (for paging links)."""
        return [(k, v) for k, v in self.used if k not in ("_count", "_offset")]


def parse_search(resource_type: str, params: list[tuple[str, str]], zone: ZoneInfo, *,
                 strict: bool = False, allowed: dict[str, tuple[str, str]] | None = None,
                 includes: frozenset[str] | None = None) -> SearchQuery:
    """Parse ``params`` for ``resource_type``; :class:`Rejected` (400) names the bad one."""
    known = allowed if allowed is not None else SEARCH_PARAMS.get(resource_type, {})
    include_ok = includes if includes is not None else INCLUDES.get(resource_type, frozenset())
    query = SearchQuery(resource_type)
    for raw_name, value in params:
        name, _, modifier = raw_name.partition(":")
        if name in ("_format", "_pretty", "_summary", "_elements", "_total"):
            continue
        if name == "_count":
            query.count = _integer(raw_name, value, 0, MAX_COUNT)
        elif name == "_offset":
            query.offset = _integer(raw_name, value, 0, 10**9)
        elif name == "_include":
            if value not in include_ok:
                raise Rejected(f"_include={value} is not supported", location="_include")
            query.includes.append(value)
        elif name in known:
            _parse_known(query, name, modifier, value, known[name][0], zone)
        else:
            if strict:
                raise Rejected(f"unknown search parameter {raw_name!r}", location=raw_name)
            query.ignored.append(raw_name)
            continue
        query.used.append((raw_name, value))
    return query


def _parse_known(query: SearchQuery, name: str, modifier: str, value: str, kind: str,
                 zone: ZoneInfo) -> None:
    if modifier and not (kind == "reference" and modifier == "Patient"):
        raise Rejected(f"modifier :{modifier} is not supported on {name}", location=name)
    values = [v for v in _split(value) if v]
    if not values:
        raise Rejected(f"{name} has no value", location=name)
    if name == "_id":
        query.ids.append(values)
    elif name == "identifier":
        query.identifiers.append([_token(v) for v in values])
    elif name in ("subject", "patient"):
        query.subjects.append([_patient_id(name, v) for v in values])
    elif name == "status":
        query.statuses.append(values)
    elif kind == "date":
        if len(values) > 1:
            raise Rejected(f"{name} takes one date per parameter", location=name)
        query.last_updated.extend(date_bounds(name, values[0], zone))


def _split(value: str) -> list[str]:
    """Split on commas not escaped with a backslash; unescape ``\\,`` ``\\|`` ``\\\\``."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += char if char in ",|$\\" else "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def _token(value: str) -> Token:
    if "|" not in value:
        return Token(None, value)
    system, _, code = value.partition("|")
    if not code:
        raise Rejected("identifier needs a value after '|'", location="identifier")
    return Token(system, code)


def _patient_id(name: str, value: str) -> str:
    ref = value.rstrip("/")
    if "/" in ref:
        kind, _, ident = ref.rpartition("/")
        if kind.rsplit("/", 1)[-1] != "Patient":
            raise Rejected(f"{name} must reference a Patient", location=name)
        ref = ident
    if not ref:
        raise Rejected(f"{name} has no patient id", location=name)
    return ref


def _integer(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit():
        raise Rejected(f"{name} must be a whole number", location=name)
    return min(max(int(value), low), high)


def date_bounds(name: str, value: str, zone: ZoneInfo) -> list[Bound]:
    """One date parameter as the bounds it puts on the column (UTC)."""
    prefix = value[:2] if value[:2].isalpha() else "eq"
    text = value[2:] if value[:2].isalpha() else value
    if prefix not in ("eq", "ge", "gt", "le", "lt"):
        raise Rejected(f"{name}: prefix {prefix!r} is not supported", location=name)
    start, end = _range(name, text, zone)
    if prefix == "eq":
        return [Bound("ge", start), Bound("lt", end)]
    return [{"ge": Bound("ge", start), "gt": Bound("ge", end), "le": Bound("lt", end),
             "lt": Bound("lt", start)}[prefix]]


def _range(name: str, text: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    found = _DATE.match(text)
    if found is None:
        raise Rejected(f"{name}: {text!r} is not a FHIR date", location=name)
    try:
        year, month, day = int(found["y"]), int(found["m"] or 1), int(found["d"] or 1)
        hour, minute = int(found["H"] or 0), int(found["M"] or 0)
        second = int(found["S"] or 0)
        micro = int((found["f"] or "0")[:6].ljust(6, "0"))
        tz = found["tz"]
        tzinfo = zone if not tz else UTC if tz == "Z" else timezone(
            (-1 if tz[0] == "-" else 1) * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tzinfo)
    except ValueError:
        raise Rejected(f"{name}: {text!r} is not a valid date", location=name) from None
    if found["m"] is None:
        end = start.replace(year=year + 1)
    elif found["d"] is None:
        end = start.replace(year=year + month // 12, month=month % 12 + 1)
    elif found["H"] is None:
        end = start + timedelta(days=1)
    elif found["S"] is None:
        end = start + timedelta(minutes=1)
    elif found["f"] is None:
        end = start + timedelta(seconds=1)
    else:
        end = start + timedelta(microseconds=10 ** (6 - min(len(found["f"]), 6)))
    return start.astimezone(UTC), end.astimezone(UTC)

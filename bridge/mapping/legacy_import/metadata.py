"""Metadata for images a legacy modality exported without DICOM. Pure: no I/O besides
reading the YAML table once at start.

A table in ``mappings/import/<name>.yaml`` declares where a plain image's patient and study
data come from:

- **sidecar files**: the image's own (``IMAGE.jpg`` → ``IMAGE.json``/``.ini``/``.txt``), or
  one per folder (``study.ini``), in JSON, INI or ``key=value`` text, in the encodings old
  export software writes (UTF-8, windows-1251); ``fields`` maps DICOM keywords to the field
  names (case-insensitive; ``Section.Key`` for INI, ``a.b`` for nested JSON);
- **file-name patterns**: templates such as ``{PatientID}_{StudyDate}_{AccessionNumber}_{n}.{ext}``
  or regular expressions whose named groups are DICOM keywords, matched against the file name
  (or, for a pattern with ``/``, against as many trailing folders);
- **defaults** for what nothing gave (Modality, ConversionType).

The values are normalised here (dates and times in the declared formats to DICOM's
``YYYYMMDD``/``HHMMSS``, mapped codes such as ``Ж`` → ``F``) and checked against their VR, so a
bad value rejects the file with a reason instead of landing in the archive. Reasons never
quote the value (it may be a patient's name).
"""

from __future__ import annotations

import codecs
import configparser
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import validate_value

from bridge.mapping.tables import TableError, read_table
from bridge.mapping.translit import Language, transliterate_person_name, transliterate_text

#: VRs a sidecar or a file name may set: single text-like values.
_SETTABLE_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                           "ST", "TM", "UC", "UI", "UT"})
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: Group names of a pattern that are not DICOM keywords.
_ALIASES = {"n": "InstanceNumber"}
_IGNORED_GROUPS = frozenset({"ext"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|\*)\}")
SIDECAR_KINDS = ("json", "ini", "txt")


class MetadataError(ValueError):
    """A value for the image is unusable; the message names the attribute, not the value."""


@dataclass(frozen=True, slots=True)
class FieldRule:
    keyword: str
    #: Candidate field names (case-folded); the first one present wins.
    fields: tuple[str, ...] = ()
    #: For a PN: fields joined as ``Family^Given^Middle`` (used when ``fields`` gave nothing).
    components: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NamePattern:
    #: As written in the table (for messages and ``--help``).
    text: str
    regex: re.Pattern[str]
    #: How many trailing path components it is matched against (1: the file name).
    depth: int


@dataclass(frozen=True, slots=True)
class ImportMapping:
    name: str
    sidecar_extensions: tuple[str, ...] = ("json", "ini", "txt")
    folder_files: tuple[str, ...] = ()
    encodings: tuple[str, ...] = ("utf-8", "windows-1251")
    fields: tuple[FieldRule, ...] = ()
    patterns: tuple[NamePattern, ...] = ()
    defaults: Mapping[str, str] = field(default_factory=dict)
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    date_formats: tuple[str, ...] = ("%Y%m%d",)
    time_formats: tuple[str, ...] = ("%H%M%S",)

    def is_sidecar_name(self, file_name: str) -> bool:
        """Whether a file is metadata for images (never imported itself)."""
        lowered = file_name.casefold()
        return (lowered.rpartition(".")[2] in self.sidecar_extensions
                or lowered in self.folder_files)


# -- loading ------------------------------------------------------------------------------


def load_import_mapping(mappings_dir: Path, name: str) -> ImportMapping:
    """``mappings/import/<name>.yaml``, checked; a :class:`TableError` names what is wrong."""
    path = mappings_dir / "import" / f"{name}.yaml"
    if not path.is_file():
        raise TableError(f"{path}: no such import mapping")
    data = read_table(path)
    try:
        return _compile(name, data)
    except (TableError, re.error, TypeError, ValueError) as exc:
        raise TableError(f"{path}: {exc}") from None


def with_patterns(mapping: ImportMapping, patterns: list[str]) -> ImportMapping:
    """The mapping with its file-name patterns replaced (``bridge import --pattern``)."""
    return replace(mapping, patterns=tuple(compile_pattern(p) for p in patterns))


def _compile(name: str, data: dict[str, Any]) -> ImportMapping:
    sidecar = data.get("sidecar") or {}
    fields = tuple(_field_rule(keyword, spec)
                   for keyword, spec in (sidecar.get("fields") or {}).items())
    patterns = tuple(_pattern(p) for p in (data.get("filename") or {}).get("patterns") or ())
    defaults = {_keyword(k): str(v) for k, v in (data.get("defaults") or {}).items()}
    value_maps = {_keyword(k): {str(a).casefold(): str(b) for a, b in (v or {}).items()}
                  for k, v in (data.get("value_maps") or {}).items()}
    encodings = tuple(str(e) for e in sidecar.get("encodings") or ("utf-8", "windows-1251"))
    for encoding in encodings:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise TableError(f"sidecar.encodings: unknown encoding {encoding!r}") from None
    extensions = tuple(str(e).casefold().lstrip(".")
                       for e in sidecar.get("extensions") or SIDECAR_KINDS)
    unknown = [e for e in extensions if e not in SIDECAR_KINDS]
    if unknown:
        raise TableError(f"sidecar.extensions: {unknown} unknown; use {list(SIDECAR_KINDS)}")
    mapping = ImportMapping(
        name=name, sidecar_extensions=extensions,
        folder_files=tuple(str(f).casefold() for f in sidecar.get("folder_files") or ()),
        encodings=encodings, fields=fields, patterns=patterns, defaults=defaults,
        value_maps=value_maps,
        date_formats=tuple(str(f) for f in data.get("date_formats") or ("%Y%m%d",)),
        time_formats=tuple(str(f) for f in data.get("time_formats") or ("%H%M%S",)))
    try:
        normalise(defaults, mapping)
    except MetadataError as exc:
        raise TableError(f"defaults: {exc}") from None
    return mapping


def _keyword(keyword: object) -> str:
    name = str(keyword)
    if tag_for_keyword(name) is None:
        raise TableError(f"{name!r} is not a DICOM keyword")
    if dictionary_VR(name) not in _SETTABLE_VRS:
        raise TableError(f"{name} has VR {dictionary_VR(name)}; only single text values")
    return name


def _field_rule(keyword: str, spec: Any) -> FieldRule:
    keyword = _keyword(keyword)
    if isinstance(spec, dict):
        components = tuple(str(c).casefold() for c in spec.get("components") or ())
        if components and dictionary_VR(keyword) != "PN":
            raise TableError(f"sidecar.fields.{keyword}: components are for person names")
        names = spec.get("fields") or ()
        return FieldRule(keyword, tuple(str(f).casefold() for f in _as_list(names)),
                         components)
    return FieldRule(keyword, tuple(str(f).casefold() for f in _as_list(spec)))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _pattern(spec: Any) -> NamePattern:
    if isinstance(spec, dict):
        if "regex" not in spec:
            raise TableError("filename.patterns: an entry is a template or {regex: ...}")
        return compile_pattern("regex:" + str(spec["regex"]), depth=int(spec.get("depth", 1)))
    return compile_pattern(str(spec))


def compile_pattern(text: str, *, depth: int | None = None) -> NamePattern:
    """A template (``{PatientID}_{StudyDate}.{ext}``; ``{*}`` is anything) or, prefixed
    ``regex:``, a regular expression with named groups. Matched case-insensitively against
    the whole file name, or for a template with ``/`` (a regex with ``depth``) against as
    many trailing path components."""
    if text.startswith("regex:"):
        source = text.removeprefix("regex:")
        depth = depth or 1
    else:
        parts: list[str] = []
        last = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(re.escape(text[last:match.start()]))
            name = match.group(1)
            if name == "*":
                parts.append(".*?")
            elif name == "ext":
                parts.append(r"(?P<ext>[^./]+)")
            else:
                parts.append(f"(?P<{name}>[^/]+?)")
            last = match.end()
        parts.append(re.escape(text[last:]))
        source = "".join(parts)
    regex = re.compile(source, re.IGNORECASE)
    for group in regex.groupindex:
        if group not in _IGNORED_GROUPS and not group.startswith("_"):
            _keyword(_ALIASES.get(group, group))
    return NamePattern(text, regex, depth=depth or text.count("/") + 1)


# -- sidecar files ------------------------------------------------------------------------


def decode_sidecar(raw: bytes, encodings: tuple[str, ...]) -> str:
    """The text of a sidecar: a BOM decides, else the first encoding that decodes strictly
    (put the permissive single-byte one, windows-1251, last)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="replace")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode(encodings[-1] if encodings else "latin-1", errors="replace")


def parse_sidecar(text: str, kind: str) -> dict[str, str]:
    """Field name (case-folded) → value. JSON nests with dots; INI gives ``section.key`` and
    ``key``; text takes ``key=value``, ``key: value`` or tab-separated lines."""
    try:
        if kind == "json":
            data = json.loads(text)
            if not isinstance(data, dict):
                raise MetadataError("sidecar: a JSON object is expected")
            return dict(_flatten(data, ""))
        if kind == "ini":
            return _parse_ini(text)
    except (json.JSONDecodeError, configparser.Error) as exc:
        raise MetadataError(f"sidecar ({kind}) is malformed: {type(exc).__name__}") from None
    return _parse_lines(text)


def _flatten(data: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{str(key).strip().casefold()}"
        if isinstance(value, dict):
            found.extend(_flatten(value, name + "."))
        elif isinstance(value, list):
            if value and not isinstance(value[0], dict | list):
                found.append((name, "\\".join(str(v) for v in value)))
        elif value is not None:
            found.append((name, str(value)))
    return found


def _parse_ini(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       delimiters=("=", ":"))
    parser.optionxform = str.casefold  # type: ignore[assignment,method-assign]
    if not text.lstrip().startswith("["):
        text = "[default]\n" + text
    parser.read_string(text)
    found: dict[str, str] = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            found[f"{section.casefold()}.{key}"] = value
            found.setdefault(key, value)
    return found


def _parse_lines(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        for separator in ("=", ":", "\t"):
            key, sep, value = line.partition(separator)
            if sep and key.strip():
                found.setdefault(key.strip().casefold(), value.strip())
                break
    return found


def values_from_fields(fields: Mapping[str, str], mapping: ImportMapping) -> dict[str, str]:
    """The DICOM values a parsed sidecar gives (raw: see :func:`normalise`)."""
    values: dict[str, str] = {}
    for rule in mapping.fields:
        found = next((fields[f].strip() for f in rule.fields if fields.get(f, "").strip()), "")
        if not found and rule.components:
            parts = [fields.get(c, "").strip() for c in rule.components]
            found = "^".join(parts).rstrip("^") if any(parts) else ""
        if found:
            values.setdefault(rule.keyword, found)
    return values


# -- file names ---------------------------------------------------------------------------


def values_from_path(parts: tuple[str, ...], mapping: ImportMapping) -> dict[str, str] | None:
    """The values the first matching pattern gives for a file (``parts``: its path
    components, the file name last); None when no pattern matches."""
    for pattern in mapping.patterns:
        if len(parts) < pattern.depth:
            continue
        match = pattern.regex.fullmatch("/".join(parts[-pattern.depth:]))
        if match is None:
            continue
        return {_ALIASES.get(group, group): value.strip()
                for group, value in match.groupdict().items()
                if value and group not in _IGNORED_GROUPS and not group.startswith("_")}
    return None


# -- values -------------------------------------------------------------------------------


def normalise(values: Mapping[str, str], mapping: ImportMapping) -> dict[str, str]:
    """Values mapped (``value_maps``), dates and times in DICOM form, and checked against
    their VR; a :class:`MetadataError` names the first bad attribute."""
    result: dict[str, str] = {}
    for keyword, raw in values.items():
        value = raw.strip()
        table = mapping.value_maps.get(keyword)
        if table is not None:
            value = table.get(value.casefold(), value)
        vr = dictionary_VR(keyword)
        if vr == "DA":
            value = _reformat(keyword, value, mapping.date_formats, "%Y%m%d", "date")
        elif vr == "TM":
            value = _reformat(keyword, value, mapping.time_formats, "%H%M%S", "time")
        elif vr == "IS" and value.isdigit():
            value = value.lstrip("0") or "0"  # "0007" from a file name
        elif vr == "CS":
            value = value.upper()
        if "\\" in value and vr != "PN":
            raise MetadataError(f"{keyword}: holds a backslash (DICOM's value separator)")
        try:
            validate_value(vr, value, pydicom_config.RAISE)
        except ValueError:
            raise MetadataError(f"{keyword}: not a valid {vr} value (length or characters)"
                                ) from None
        result[keyword] = value
    return result


def _reformat(keyword: str, value: str, formats: tuple[str, ...], target: str,
              what: str) -> str:
    for form in formats:
        try:
            return datetime.strptime(value, form).strftime(target)
        except ValueError:
            continue
    raise MetadataError(f"{keyword}: not a {what} in the declared formats {list(formats)}")


def transliterated(values: Mapping[str, str], language: Language) -> dict[str, str]:
    """Text values in Latin letters (KMU 55 for Ukrainian, ICAO for Russian); person names
    per component, one Latin group only."""
    result: dict[str, str] = {}
    for keyword, value in values.items():
        vr = dictionary_VR(keyword)
        if vr == "PN":
            result[keyword] = transliterate_person_name(value, language)
        elif vr in _TEXT_VRS:
            result[keyword] = transliterate_text(value, language)
        else:
            result[keyword] = value
    return result

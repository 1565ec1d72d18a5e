"""An independent check of de-identified files: it shares no code with the de-identifier.

It reads the standard's Table E.1-1 from the fixtures (the 2024b list of basic actions and
the extraction with the option columns), not ``mappings/deid/``, and fails on:

- an attribute of the table that keeps its original value where the chosen options do not
  retain it (a K of a chosen option), at any depth, dates included;
- a private attribute without Retain Safe Private;
- the patient's name or an identifier anywhere: in any text value at any depth, and in the
  file's bytes (so nothing hides in an element the scan does not decode);
- a UID of the original (not a SOP class or transfer syntax) left in place without Retain UIDs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "deid"
_COLUMNS = {
    "retain_safe_private": "rtnSafePrivOpt", "retain_uids": "rtnUIDsOpt",
    "retain_device_identity": "rtnDevIdOpt", "retain_institution_identity": "rtnInstIdOpt",
    "retain_patient_characteristics": "rtnPatCharsOpt",
    "retain_full_dates": "rtnLongFullDatesOpt", "retain_modified_dates": "rtnLongModifDatesOpt",
    "clean_descriptors": "cleanDescOpt", "clean_structured_content": "cleanStructContOpt",
    "clean_graphics": "cleanGraphOpt",
}
#: Attributes whose value a de-identifier writes on purpose (PS3.15 E.1.1).
_MARKERS = {0x00120062, 0x00120063, 0x00120064, 0x00280303, 0x00280301}


def _tag(text: str) -> int | None:
    digits = text.strip("()").replace(",", "")
    try:
        return int(digits, 16)
    except ValueError:
        return None  # masked rows (50xx,xxxx) and the private row


def standard_rows() -> dict[int, dict[str, str]]:
    """tag → {"basic": ..., option column: K/C} from the two copies of the standard."""
    rows: dict[int, dict[str, str]] = {}
    current = json.loads((FIXTURES / "dicomanonymizer_e1_1.json").read_text(encoding="utf-8"))
    for row in current["rows"]:
        tag = _tag(row["tag"])
        if tag is not None:
            rows[tag] = {"basic": row["basic"]}
    for row in json.loads((FIXTURES / "ps3_15_table_e1_1.json").read_text(encoding="utf-8")):
        tag = _tag(row["tag"])
        if tag is not None:
            rows.setdefault(tag, {"basic": row["basicProfile"]}).update(
                {k: v for k, v in row.items() if k.endswith("Opt")})
    return rows


@dataclass(frozen=True)
class Finding:
    where: str
    problem: str


def _walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, int, object, str]]:
    for element in ds:
        here = f"{path}({element.tag.group:04X},{element.tag.element:04X})"
        if element.VR == "SQ":
            yield here, int(element.tag), None, "SQ"
            for index, item in enumerate(element.value or []):
                yield from _walk(item, f"{here}[{index}]")
        else:
            yield here, int(element.tag), element.value, str(element.VR)


def _uids(ds: Dataset) -> set[str]:
    found = set()
    for _, _, value, vr in _walk(ds):
        if vr != "UI" or not value:
            continue
        for one in ([value] if isinstance(value, str) else list(value)):  # type: ignore[call-overload]
            uid = UID(str(one))
            if uid.name == str(uid):  # not a registered UID (SOP class, transfer syntax)
                found.add(str(uid))
    return found


def scan(original: Dataset, exported_path: Path, *, options: Iterable[str],
         identity: Iterable[str]) -> list[Finding]:
    """Everything wrong with one exported file (empty: it passes)."""
    chosen = set(options)
    rows = standard_rows()
    exported = dcmread(exported_path)
    findings: list[Finding] = []
    raw = exported_path.read_bytes()
    before = {here: (value, vr) for here, _, value, vr in _walk(original)}
    for here, tag, value, vr in _walk(exported):
        if tag in _MARKERS or vr == "SQ":
            continue
        text = str(value) if value is not None else ""
        for token in identity:
            if token.casefold() in text.casefold():
                findings.append(Finding(here, f"text holds {token!r}"))
        if (tag >> 16) % 2:
            if "retain_safe_private" not in chosen:
                findings.append(Finding(here, "private attribute without Retain Safe Private"))
            continue
        row = rows.get(tag)
        if row is None or here not in before:
            continue
        if any(row.get(_COLUMNS[o]) == "K" for o in chosen):
            continue  # a chosen option retains it
        old = before[here][0]
        unchanged = old not in (None, "", b"") and str(old) == text and bool(text)
        if any(row.get(_COLUMNS[o]) == "C" for o in chosen):
            # Cleaned: text may stay when it names nobody (the identity check above);
            # dates under Retain Modified Dates must have moved.
            if unchanged and vr in ("DA", "DT") and "retain_modified_dates" in chosen:
                findings.append(Finding(here, "date not shifted"))
            continue
        if unchanged:
            findings.append(Finding(here, f"keeps its original value ({row['basic']})"))
    for token in identity:
        for encoding in ("utf-8", "latin-1"):
            try:
                encoded = token.encode(encoding)
            except UnicodeEncodeError:
                continue
            if encoded in raw:
                findings.append(Finding(str(exported_path.name), f"bytes hold {token!r}"))
    if "retain_uids" not in chosen:
        for uid in _uids(original) & _uids(exported):
            findings.append(Finding("UID", f"original UID {uid} left in place"))
    return findings

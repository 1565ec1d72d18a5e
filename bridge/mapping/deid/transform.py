"""One data set through a plan: every attribute of Table E.1-1 gets its action, private
attributes go (or stay, when safe and Retain Safe Private is chosen), UIDs and the patient get
their keyed pseudonyms, dates shift by the patient's offset, and every text value left in
place is swept for the patient's name and identifiers.

The sweep is the bridge's own addition to Annex E: the table removes the attributes meant to
hold identity, but people type a patient's name into descriptions, comments and SR text
(the fixtures hold such objects), and a destination that keeps descriptors
(Clean Descriptors) or structured content (Clean Structured Content) must not get them.
Names are looked for as written and as transliterated (KMU 55 / ICAO): a modality fed a
Latin worklist writes the Latin form.

Pixel data and other bulk values are never decoded here; only their tags are looked at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Final

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from bridge.mapping.deid.profile import (
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    NEW_UID,
    REMOVE,
    Plan,
)
from bridge.mapping.deid.pseudonyms import Pseudonyms
from bridge.mapping.translit import transliterate_person_name

TEXT_VRS: Final = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: Bulk VRs: never read (their values are pixels, waveforms, blobs).
_BULK_VRS: Final = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
PATIENT_ID: Final = 0x00100020
PATIENT_NAME: Final = 0x00100010
ISSUER: Final = 0x00100021
ACCESSION: Final = 0x00080050
PIXEL_DATA: Final = 0x7FE00010
#: Identifiers of the patient looked for in text, besides the name (PS3.6 keywords).
_IDENTIFIER_KEYWORDS: Final = ("PatientID", "AccessionNumber", "OtherPatientIDs",
                               "MedicalRecordLocator", "PatientBirthName",
                               "PatientMotherBirthName", "AdmissionID")
_DUMMIES: Final[dict[str, Any]] = {
    "AE": "ANONYMOUS", "AS": "000D", "CS": "ANONYMOUS", "DA": "19000101",
    "DT": "19000101000000", "TM": "000000", "PN": "ANONYMOUS", "LO": "ANONYMOUS",
    "SH": "ANONYMOUS", "LT": "ANONYMOUS", "ST": "ANONYMOUS", "UT": "ANONYMOUS",
    "UC": "ANONYMOUS", "UR": "", "IS": "0", "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0,
    "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0,
}
REPLACED_TEXT: Final = "REMOVED"
#: VRs whose empty value is the empty string (the others: no value at all).
_STRING_VRS: Final = TEXT_VRS | {"DA", "DT", "TM", "CS", "AS", "AE", "IS", "DS", "UI", "UR"}


@dataclass(frozen=True, slots=True)
class Change:
    """One attribute changed: where (tag path), how, and its original value as text."""

    path: str
    action: str
    value: str | None


@dataclass(slots=True)
class Outcome:
    pseudonym: str
    shift_days: int | None
    changes: list[Change] = field(default_factory=list)
    uids: dict[str, str] = field(default_factory=dict)  # original → pseudonym
    #: Top-level tags removed, replaced or changed inside (the rest is as it was read).
    touched: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SafePrivate:
    """(creator, group, element low byte) triples kept by Retain Safe Private."""

    entries: frozenset[tuple[str, int, int]]


def deidentify(ds: Dataset, plan: Plan, names: Pseudonyms, *,
               safe_private: SafePrivate) -> Outcome:
    """Change ``ds`` in place; what was changed, and the pseudonyms used, come back."""
    codecs = list(getattr(ds, "_character_set", None) or ["iso8859"])
    patient_id = str(ds.get("PatientID", "") or "")
    issuer = str(ds.get("IssuerOfPatientID", "") or "")
    shift = names.shift_days(patient_id, issuer) if plan.retains("retain_modified_dates") \
        else None
    walk = _Walk(plan=plan, names=names, safe_private=safe_private,
                 sweep=identity_pattern(ds), shift=shift,
                 codec=codecs[0] if len(codecs) == 1 else None,
                 outcome=Outcome(pseudonym=names.patient(patient_id, issuer), shift_days=shift))
    walk.dataset(ds, "")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SourceApplicationEntityTitle" in meta:
            del meta.SourceApplicationEntityTitle
    return walk.outcome


def identity_tokens(ds: Dataset) -> set[str]:
    """The patient's name parts (as written and transliterated) and identifiers."""
    tokens: set[str] = set()
    name = str(ds.get("PatientName", "") or "")
    forms = {name, transliterate_person_name(name, "uk"), transliterate_person_name(name, "ru")}
    for form in forms:
        tokens.update(part for part in re.split(r"[\^=\s,]+", form) if len(part) >= 2)
    for keyword in _IDENTIFIER_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        values = value if isinstance(value, MultiValue | list) else [value]
        for one in values:
            text = str(one).strip()
            if len(text) >= 2:
                tokens.add(text)
                tokens.update(p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 3)
    birth = str(ds.get("PatientBirthDate", "") or "")
    if len(birth) == 8:
        tokens.update({birth, f"{birth[6:]}.{birth[4:6]}.{birth[:4]}",
                       f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"})
    return tokens


def identity_pattern(ds: Dataset) -> re.Pattern[str] | None:
    return _pattern_of(frozenset(identity_tokens(ds)))


@lru_cache(maxsize=256)
def _pattern_of(tokens: frozenset[str]) -> re.Pattern[str] | None:
    """One compiled pattern per patient (a series' objects share it)."""
    if not tokens:
        return None
    # Longest first, so "Ivanenko-Petrenko" goes whole before "Ivanenko" matches part of it.
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


@dataclass(slots=True)
class _Walk:
    plan: Plan
    names: Pseudonyms
    safe_private: SafePrivate
    sweep: re.Pattern[str] | None
    shift: int | None
    #: The data set's one Python codec (None: ISO 2022 code extensions, values are converted
    #: by pydicom to be read).
    codec: str | None
    outcome: Outcome

    def text_of(self, ds: Dataset, tag: BaseTag) -> str | None:
        """An element's value as text without pydicom converting it (raw bytes decoded)."""
        raw = ds.get_item(tag)
        value = getattr(raw, "value", None)
        if isinstance(value, bytes) and self.codec is not None and not hasattr(raw, "_value"):
            return value.decode(self.codec, "replace").rstrip(" \x00")
        element = ds[tag]
        return None if element.value is None else str(element.value)

    def dataset(self, ds: Dataset, path: str) -> None:
        private_groups = False
        for tag in list(ds.keys()):
            if tag.group == 0x0002:
                continue
            if tag.group % 2:
                private_groups = True
                continue
            self.element(ds, tag, path)
        if private_groups:
            self.private(ds, path)

    def element(self, ds: Dataset, tag: BaseTag, path: str) -> None:
        action = self.plan.action(int(tag))
        raw = ds.get_item(tag)
        vr = str(raw.VR) if raw is not None and raw.VR else ""
        if action is None:
            if vr == "SQ":
                self.sequence(ds[tag].value, f"{path}{tag:08X}/")
            elif vr in TEXT_VRS:
                self.swept(ds, tag, path)
            return
        if action == REMOVE:
            self.record(ds, tag, path, action)
            del ds[tag]
        elif action == KEEP:
            if vr == "SQ":
                self.sequence(ds[tag].value, f"{path}{tag:08X}/")
            elif vr in TEXT_VRS:
                self.swept(ds, tag, path)
        elif vr == "SQ":
            if action == EMPTY:
                self.record(ds, tag, path, action)
                ds[tag].value = Sequence()
            else:
                self.sequence(ds[tag].value, f"{path}{tag:08X}/")
        elif vr in _BULK_VRS:
            self.record(ds, tag, path, action)
            ds[tag].value = b""
        else:
            self.replace(ds, tag, path, action, vr)

    def replace(self, ds: Dataset, tag: BaseTag, path: str, action: str, vr: str) -> None:
        """Replace a value without pydicom decoding the old one (read from its raw bytes):
        most elements an object has are written back as they were read."""
        text = self.text_of(ds, tag)
        if not text:
            return
        top = not path
        if int(tag) in (PATIENT_ID, PATIENT_NAME) and top:
            new: Any = self.outcome.pseudonym
        elif int(tag) == ACCESSION and top:
            new = self.names.accession(text)
        elif action == NEW_UID or vr == "UI":
            new = self.each(text, self.new_uid)
        elif action == CLEAN:
            self.clean(ds, tag, path, vr, text)
            return
        elif action == EMPTY:
            new = "" if vr in _STRING_VRS else None
        elif action == DUMMY and vr in ("DA", "DT") and self.shift is not None:
            new = self.each(text, self.shifted)
        elif action == DUMMY:
            new = _DUMMIES.get(vr, "")
        else:
            return
        self.record(ds, tag, path, action, text)
        self.put(ds, tag, vr, new)

    def clean(self, ds: Dataset, tag: BaseTag, path: str, vr: str, text: str) -> None:
        if vr in ("DA", "DT"):
            if self.shift is not None:
                self.record(ds, tag, path, CLEAN, text)
                self.put(ds, tag, vr, self.each(text, self.shifted))
        elif vr in TEXT_VRS:
            self.swept(ds, tag, path)

    def swept(self, ds: Dataset, tag: BaseTag, path: str) -> None:
        if self.sweep is None:
            return
        text = self.text_of(ds, tag)
        if not text or not self.sweep.search(text):
            return
        self.record(ds, tag, path, CLEAN, text)
        vr = str(ds.get_item(tag).VR)
        pattern = self.sweep
        # LT, ST and UT are single-valued: a backslash there is text, not a separator.
        new = pattern.sub(REPLACED_TEXT, text) if vr in ("LT", "ST", "UT") else \
            self.each(text, lambda one: pattern.sub(REPLACED_TEXT, one))
        self.put(ds, tag, vr, new)

    @staticmethod
    def put(ds: Dataset, tag: BaseTag, vr: str, value: Any) -> None:
        """Set a value the transform made (valid by construction: not validated again)."""
        ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)

    @staticmethod
    def each(text: str, change: Callable[[str], str]) -> str | list[str]:
        values = [change(one) for one in text.split("\\")]
        return values if len(values) > 1 else values[0]

    def sequence(self, items: Sequence, path: str) -> None:
        for index, item in enumerate(items):
            self.dataset(item, f"{path}{index}/")

    def private(self, ds: Dataset, path: str) -> None:
        keep_blocks: set[tuple[int, int]] = set()
        private_tags = [tag for tag in list(ds.keys()) if tag.group % 2]
        retain = self.plan.retains("retain_safe_private")
        for tag in private_tags:
            if not retain or 0x0010 <= tag.element <= 0x00FF:
                continue
            block = (tag.group, tag.element >> 8)
            creator = ds.get((tag.group, block[1]))
            key = (str(creator.value).strip() if creator is not None else "", tag.group,
                   tag.element & 0xFF)
            if key in self.safe_private.entries:
                keep_blocks.add(block)
            else:
                self.record(ds, tag, path, REMOVE)
                del ds[tag]
        for tag in private_tags:
            if tag not in ds:
                continue
            if 0x0010 <= tag.element <= 0x00FF and (tag.group, tag.element) in keep_blocks:
                continue
            if tag.element >= 0x1000 and retain:
                continue  # a kept safe attribute
            self.record(ds, tag, path, REMOVE)
            del ds[tag]

    # ------------------------------------------------------------------ values

    def record(self, ds: Dataset, tag: BaseTag, path: str, action: str,
               text: str | None = None) -> None:
        raw = ds.get_item(tag)
        vr = str(raw.VR) if raw is not None and raw.VR else ""
        value = text if text is not None else \
            self.text_of(ds, tag) if vr not in _BULK_VRS and vr != "SQ" else None
        self.outcome.changes.append(Change(path=f"{path}{tag:08X}", action=action, value=value))
        self.outcome.touched.add(int(path[:8], 16) if path else int(tag))

    def new_uid(self, uid: Any) -> str:
        original = str(uid)
        new = self.names.uid(original)
        self.outcome.uids[original] = new
        return new

    def shifted(self, value: Any) -> str:
        assert self.shift is not None
        return shift_date(str(value), -self.shift)



def shift_date(value: str, days: int) -> str:
    """A DA (``YYYYMMDD``) or DT (``YYYYMMDD...``) moved by ``days``; what cannot be read as a
    full date (a range, a partial date) becomes the dummy date."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return _DUMMIES["DA"] if len(text) <= 8 else _DUMMIES["DT"]
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
    except ValueError:
        return _DUMMIES["DA"]
    return moved.strftime("%Y%m%d") + text[8:]

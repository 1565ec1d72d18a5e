"""Re-identification of an object made outside (a consultant's SR, a report): the real
patient and study attributes from the study's key record, and every pseudonymous UID it
references mapped back, so it joins the real study through the normal archive path.

Its own new UIDs (its SOP instance, a new series) stay: they were never the hospital's.
Dates of its own (Content Date: when it was made) stay; the study's dates come back from the
record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

#: What a study's key record holds of the original (PS3.6 keywords), patient and study level.
IDENTITY_KEYWORDS: Final = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDs", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
    "StudyID", "StudyDescription", "ReferringPhysicianName",
)


def identity_of(ds: Dataset) -> dict[str, str]:
    """The identity attributes of an original object, as text (the study's key record).
    Read from the raw bytes where the data set has one codec (no pydicom decoding)."""
    codecs = list(getattr(ds, "_character_set", None) or ["iso8859"])
    found: dict[str, str] = {}
    for keyword, tag in _IDENTITY_TAGS:
        element = ds.get_item(tag)
        if element is None:
            continue
        value = getattr(element, "value", None)
        if isinstance(value, bytes) and len(codecs) == 1 and not hasattr(element, "_value"):
            text = value.decode(codecs[0], "replace").rstrip(" \x00")
        else:
            converted = ds[tag].value
            text = "" if converted is None else str(converted)
        if text:
            found[keyword] = text
    return found


_IDENTITY_TAGS: Final = tuple((keyword, int(tag_for_keyword(keyword) or 0))
                              for keyword in IDENTITY_KEYWORDS)


def reidentify(ds: Dataset, identity: Mapping[str, str], uids_back: Mapping[str, str]) -> int:
    """Change ``ds`` in place; the number of UIDs mapped back."""
    mapped = _map_uids(ds, uids_back)
    for keyword in IDENTITY_KEYWORDS:
        if keyword in identity:
            setattr(ds, keyword, identity[keyword])
    for keyword in ("PatientIdentityRemoved", "DeidentificationMethod",
                    "DeidentificationMethodCodeSequence",
                    "LongitudinalTemporalInformationModified"):
        if keyword in ds:
            delattr(ds, keyword)
    return mapped


def _map_uids(ds: Dataset, uids_back: Mapping[str, str]) -> int:
    mapped = 0
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                mapped += _map_uids(item, uids_back)
        elif element.VR == "UI" and element.value:
            values = element.value if isinstance(element.value, MultiValue | list) \
                else [element.value]
            new = [uids_back.get(str(v), str(v)) for v in values]
            changed = sum(1 for old, one in zip(values, new, strict=True) if str(old) != one)
            if changed:
                element.value = new if len(new) > 1 else new[0]
                mapped += changed
    return mapped

"""What a de-identified object says of itself (PS3.15 E.1.1, PS3.3 C.7.1.1): Patient Identity
Removed YES, De-identification Method and its Code Sequence (CID 7050: the profile, then each
option applied), Longitudinal Temporal Information Modified, and Burned In Annotation NO once
pixel cleaning blanked the text."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from bridge.mapping.deid.profile import Profile

METHOD_TEXT = "bridge PS3.15 E.1 Basic Profile"


#: The attributes :func:`mark` sets.
MARKERS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303, 0x00280301})


def mark(ds: Dataset, profile: Profile, options: Iterable[str], *, pixels_cleaned: bool,
         edition: str | None = None) -> frozenset[int]:
    """Set the markers; the tags set (all of :data:`MARKERS` but Burned In Annotation when
    the pixels were left as they were)."""
    chosen = sorted(options)
    codes = [profile.profile_code] + [(profile.options[o].code, profile.options[o].meaning)
                                      for o in chosen]
    if pixels_cleaned:
        codes.append(profile.clean_pixel_code)
    ds.PatientIdentityRemoved = "YES"
    # LO is 64 characters at most; the attribute is multi-valued (VM 1-n): one value each.
    ds.DeidentificationMethod = [f"{METHOD_TEXT} {edition or profile.edition}"[:64]] + [
        profile.options[o].meaning[:64] for o in chosen]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning[:64]
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if "retain_modified_dates" in chosen:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    elif "retain_full_dates" in chosen:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
    if pixels_cleaned:
        ds.BurnedInAnnotation = "NO"
        return MARKERS
    return MARKERS - {0x00280301}

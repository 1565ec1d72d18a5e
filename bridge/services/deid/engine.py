"""One object de-identified for one destination, with its key record: the step every export,
the grid gateway and ``bridge deid FILES`` share.

:func:`prepare` reads the file's bytes, decides on its pixels (send, clean, hold back),
applies the plan (:mod:`bridge.mapping.deid.transform`), marks the method, writes the result,
and builds the key record: the original header bytes (the prefix up to Pixel Data, see
:mod:`bridge.mapping.deid.layout`), the original pixel data element when a rule blanked it,
the changed values, and the hashes a byte-exact restore is checked against. Nothing is
written anywhere here; the caller seals the record and stores it before the object leaves.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from bridge.errors import Rejected
from bridge.mapping.deid.layout import body_offset, header_hash, pixel_tail
from bridge.mapping.deid.method import mark
from bridge.mapping.deid.pixels import PixelRules, blank, load_pixel_rules, verdict
from bridge.mapping.deid.profile import Plan, Profile, load_profile, make_plan
from bridge.mapping.deid.pseudonyms import Pseudonyms
from bridge.mapping.deid.reidentify import identity_of
from bridge.mapping.deid.splice import element_starts, splice_header
from bridge.mapping.deid.transform import SafePrivate, deidentify
from bridge.mapping.tables import read_table
from bridge.services.deid.keys import b64


@dataclass(frozen=True, slots=True)
class Recipe:
    """What one destination's exports apply: the plan of its options and its pseudonyms."""

    profile: Profile
    plan: Plan
    names: Pseudonyms
    safe_private: SafePrivate
    pixel_rules: PixelRules

    @classmethod
    def build(cls, mappings_dir: Path, options: tuple[str, ...], secret: bytes) -> Recipe:
        profile = load_profile(mappings_dir)
        return cls(profile=profile, plan=make_plan(profile, options), names=Pseudonyms(secret),
                   safe_private=load_safe_private(mappings_dir),
                   pixel_rules=load_pixel_rules(mappings_dir))


@dataclass(slots=True)
class Prepared:
    """The outcome for one object: ``sent`` (with ``output``) or ``held`` (with ``reason``)."""

    status: str
    reason: str = ""
    output: bytes = b""
    sop_class_uid: str = ""
    pseudo_sop_uid: str = ""
    pseudo_series_uid: str = ""
    pseudo_study_uid: str = ""
    pseudo_patient: str = ""
    shift_days: int | None = None
    original_sha256: str = ""
    body_sha256: str = ""
    #: The key record (sealed by the caller) and the originals of the UIDs.
    record: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)


def prepare(raw: bytes, recipe: Recipe, *, original_sha256: str | None = None) -> Prepared:
    """``original_sha256``: the archive's hash of ``raw`` when it has one (saves a pass)."""
    source = BytesIO(raw)
    try:
        # The header only: pixel data is never decoded nor copied here (the fast path).
        ds = dcmread(source, force=True, stop_before_pixels=True)
        header_end = source.tell()
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        implicit = bool(syntax.is_implicit_VR) if syntax else True
        little = bool(syntax.is_little_endian) if syntax else True
        starts = element_starts(ds, implicit=implicit)
        sop_uid = str(ds.SOPInstanceUID)
        study_uid = str(ds.StudyInstanceUID)
        series_uid = str(ds.SeriesInstanceUID)
    except (InvalidDicomError, AttributeError, ValueError, EOFError, KeyError) as exc:
        raise Rejected(f"not a DICOM object with study, series and instance UIDs: "
                       f"{type(exc).__name__}", location="file") from None
    original_sha = original_sha256 or hashlib.sha256(raw).hexdigest()
    sop_class = str(ds.get("SOPClassUID", ""))
    has_pixels = header_end < len(raw)
    pixels = verdict(ds, recipe.pixel_rules, has_pixels=has_pixels)
    if pixels.decision == "hold":
        return Prepared(status="held", reason=pixels.reason, sop_class_uid=sop_class,
                        original_sha256=original_sha)
    deflated = bool(syntax and syntax.is_deflated)
    spliced = has_pixels and not deflated and pixels.decision != "clean" and pixel_tail(
        raw, header_end, implicit=implicit, little=little)
    identity = identity_of(ds)
    if spliced:
        # Header changed, pixel data element carried over byte for byte.
        outcome = deidentify(ds, recipe.plan, recipe.names, safe_private=recipe.safe_private)
        marked = mark(ds, recipe.profile, recipe.plan.options, pixels_cleaned=False)
        header = splice_header(raw, ds, starts, outcome.touched | marked,
                               header_end=header_end,
                               body_start=body_offset(raw), implicit=implicit, little=little)
        tail = memoryview(raw)[header_end:]
        output = header + tail
        prefix_end = header_end
    else:
        ds = dcmread(BytesIO(raw), force=True)
        outcome = deidentify(ds, recipe.plan, recipe.names, safe_private=recipe.safe_private)
        cleaned = pixels.decision == "clean"
        if cleaned:
            assert pixels.rule is not None
            blank(ds, pixels.rule)
        mark(ds, recipe.profile, recipe.plan.options, pixels_cleaned=cleaned)
        output = _written(ds)
        # A blanked object keeps its original pixel data element in the key; anything else
        # that could not be spliced keeps the whole original.
        prefix_end = header_end if cleaned and pixel_tail(
            raw, header_end, implicit=implicit, little=little) else len(raw)
    record: dict[str, Any] = {
        "v": 1,
        "prefix": b64(zlib.compress(memoryview(raw)[:prefix_end], 1)),
        "tail_length": len(raw) - prefix_end if spliced else 0,
        "changes": [[c.path, c.action, c.value] for c in outcome.changes],
    }
    if not spliced and prefix_end < len(raw):
        record["tail"] = b64(zlib.compress(memoryview(raw)[prefix_end:], 1))
    return Prepared(
        status="sent", output=output, sop_class_uid=sop_class,
        pseudo_sop_uid=str(ds.SOPInstanceUID), pseudo_series_uid=str(ds.SeriesInstanceUID),
        pseudo_study_uid=str(ds.StudyInstanceUID), pseudo_patient=outcome.pseudonym,
        shift_days=outcome.shift_days, original_sha256=original_sha,
        body_sha256=header_hash(output, record["tail_length"]),
        record=record, identity=identity,
        originals={"sop": sop_uid, "series": series_uid, "study": study_uid,
                   **{new: old for old, new in outcome.uids.items()}},
    )


def _written(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file (as a bare data set when it came without file meta), in its
    own encoding; pydicom's ``save_as`` would deep-copy the file meta for every object."""
    buffer = DicomBytesIO()
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if meta is not None and syntax is not None and "MediaStorageSOPClassUID" in meta:
        buffer.write(getattr(ds, "preamble", None) or b"\0" * 128)
        buffer.write(b"DICM")
        write_file_meta_info(buffer, meta, enforce_standard=True)
        buffer.is_little_endian = syntax.is_little_endian
        buffer.is_implicit_VR = syntax.is_implicit_VR
    else:
        buffer.is_little_endian = ds.original_encoding[1] is not False
        buffer.is_implicit_VR = ds.original_encoding[0] is not False
    write_dataset(buffer, ds)
    return buffer.getvalue()


@cache
def load_safe_private(mappings_dir: Path) -> SafePrivate:
    path = mappings_dir / "deid" / "safe_private.yaml"
    if not path.exists():
        return SafePrivate(frozenset())
    table = read_table(path)
    entries = frozenset(
        (str(row["creator"]).strip(), int(str(row["group"]), 16), int(str(row["element"]), 16))
        for row in table.get("attributes") or [])
    return SafePrivate(entries)

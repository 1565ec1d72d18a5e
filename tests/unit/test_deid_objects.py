"""One object through the profile: the independent PHI scan passes under each set of options,
pseudonyms are consistent and keyed, references still resolve, dates shift by the patient's
offset, safe private attributes stay only when asked, burned-in pixels are held back or
blanked, and the key record restores the original byte for byte."""

from __future__ import annotations

import hashlib
import shutil
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from bridge.config.settings import PROJECT_ROOT
from bridge.mapping.deid.transform import shift_date
from bridge.services.deid.engine import Prepared, Recipe, prepare
from bridge.services.deid.restore import original_bytes
from tests.deid_fixtures import (
    ACCESSION,
    BIRTH_DATE,
    IDENTITY_STRINGS,
    burned_in_us,
    phi_ct,
    phi_sr,
    write,
)
from tests.phi_scan import scan

MAPPINGS = PROJECT_ROOT / "mappings"
SECRET = b"s" * 32
OPTION_SETS = [
    (),
    ("retain_modified_dates", "clean_descriptors", "clean_structured_content"),
    ("retain_full_dates", "retain_patient_characteristics", "retain_device_identity",
     "retain_institution_identity"),
    ("retain_safe_private", "retain_modified_dates", "clean_graphics"),
    ("retain_uids", "clean_descriptors"),
]


def _bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _export(ds: Dataset, options: tuple[str, ...], tmp_path: Path,
            secret: bytes = SECRET) -> tuple[bytes, Prepared, Path]:
    raw = _bytes(ds)
    prepared = prepare(raw, Recipe.build(MAPPINGS, options, secret))
    assert prepared.status == "sent", prepared.reason
    path = tmp_path / f"{prepared.pseudo_sop_uid}.dcm"
    path.write_bytes(prepared.output)
    return raw, prepared, path


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "+".join(o) or "basic")
@pytest.mark.parametrize("kind", ["ct", "sr"])
def test_phi_scan_passes_for_every_option_set(kind: str, options: tuple[str, ...],
                                              tmp_path: Path) -> None:
    study = generate_uid()
    ds = phi_ct(study, generate_uid()) if kind == "ct" else phi_sr(study)
    original = dcmread(BytesIO(_bytes(ds)))
    _raw, _prepared, path = _export(ds, options, tmp_path)
    findings = scan(original, path, options=options, identity=IDENTITY_STRINGS)
    assert findings == []
    out = dcmread(path)
    assert out.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and len(codes) == 1 + len(options)
    assert out.LongitudinalTemporalInformationModified == (
        "MODIFIED" if "retain_modified_dates" in options else
        "UNMODIFIED" if "retain_full_dates" in options else "REMOVED")


def test_the_scan_catches_what_a_weak_de_identifier_leaves(tmp_path: Path) -> None:
    """The checker is not a rubber stamp: a file with the name in a comment, a private tag and
    an original UID fails it."""
    study = generate_uid()
    ds = phi_ct(study, generate_uid())
    original = dcmread(BytesIO(_bytes(ds)))
    weak = dcmread(BytesIO(_bytes(ds)))
    weak.PatientName, weak.PatientID = "X", "Y"
    path = write(weak, tmp_path, "weak.dcm")
    problems = {f.problem for f in scan(original, path, options=(), identity=IDENTITY_STRINGS)}
    assert any("Shevchenko" in p for p in problems)
    assert "private attribute without Retain Safe Private" in problems
    assert any("original UID" in p for p in problems)
    assert any("keeps its original value" in p for p in problems)


def test_pseudonyms_are_consistent_per_destination_and_keyed(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    first, second = phi_ct(study, series, 1), phi_ct(study, series, 2)
    _, a, _ = _export(first, ("retain_modified_dates",), tmp_path)
    _, b, _ = _export(second, ("retain_modified_dates",), tmp_path)
    _, other, _ = _export(phi_ct(study, series, 3), ("retain_modified_dates",), tmp_path,
                          secret=b"o" * 32)
    assert a.pseudo_patient == b.pseudo_patient != other.pseudo_patient
    assert a.pseudo_study_uid == b.pseudo_study_uid != other.pseudo_study_uid
    assert a.pseudo_series_uid == b.pseudo_series_uid
    assert a.pseudo_sop_uid != b.pseudo_sop_uid
    assert a.pseudo_study_uid.startswith("2.25.") and study not in a.pseudo_study_uid
    assert a.shift_days == b.shift_days and a.shift_days is not None
    out = dcmread(BytesIO(a.output))
    assert out.StudyDate == shift_date("20261207", -a.shift_days)
    assert out.PatientBirthDate in ("", shift_date(BIRTH_DATE, -a.shift_days))
    assert out.AccessionNumber and out.AccessionNumber != ACCESSION


def test_references_inside_sequences_resolve_after_de_identification(tmp_path: Path) -> None:
    study = generate_uid()
    ct = phi_ct(study, generate_uid())
    sr = phi_sr(study, referenced=ct)
    _, image, _ = _export(ct, (), tmp_path)
    _, report, _ = _export(sr, (), tmp_path)
    out = dcmread(BytesIO(report.output))
    evidence = out.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == image.pseudo_study_uid
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == image.pseudo_series_uid
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.pseudo_sop_uid


def test_safe_private_attributes_stay_only_under_the_option(tmp_path: Path) -> None:
    ds = phi_ct(generate_uid(), generate_uid())
    _, plain, _ = _export(ds, (), tmp_path)
    _, kept, _ = _export(ds, ("retain_safe_private",), tmp_path)
    plain_out, kept_out = dcmread(BytesIO(plain.output)), dcmread(BytesIO(kept.output))
    assert not [e for e in plain_out if e.tag.is_private]
    private = {(e.tag.group, e.tag.element & 0xFF): e.value for e in kept_out if e.tag.is_private
               and e.tag.element >= 0x1000}
    assert private == {(0x0043, 0x39): ["1000", "0", "0", "0"]}  # GE b-value: safe
    creators = [e.value for e in kept_out if e.tag.is_private and e.tag.element < 0x100]
    assert creators == ["GEMS_PARM_01"]


def test_byte_identical_restore_from_the_key_record(tmp_path: Path) -> None:
    for ds in (phi_ct(generate_uid(), generate_uid(), rows=64, columns=64),
               phi_sr(generate_uid())):
        raw, prepared, _ = _export(ds, ("retain_modified_dates",), tmp_path)
        row = SimpleNamespace(body_sha256=prepared.body_sha256,
                              original_sha256=prepared.original_sha256)
        # The file meta rebuilt by a peer (another implementation class) changes nothing.
        returned = dcmread(BytesIO(prepared.output))
        returned.file_meta.ImplementationClassUID = "1.2.3.4"
        returned.file_meta.ImplementationVersionName = "OTHER_PACS"
        rebuilt = _bytes(returned)
        for back in (prepared.output, rebuilt):
            restored = original_bytes(back, row, prepared.record)  # type: ignore[arg-type]
            assert restored is not None
            assert hashlib.sha256(restored).hexdigest() == hashlib.sha256(raw).hexdigest()
        changed = dcmread(BytesIO(prepared.output))
        changed.SeriesDescription = "edited outside"
        assert original_bytes(_bytes(changed), row, prepared.record) is None  # type: ignore[arg-type]


def _mappings_with_rule(tmp_path: Path) -> Path:
    copy = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, copy)
    pixels = yaml.safe_load((copy / "deid" / "pixels.yaml").read_text("utf-8"))
    pixels["clean_rules"] = [{"name": "acme-sono5", "modality": "US",
                              "manufacturer": "acme medical", "model": "Sono 5",
                              "rows": 48, "columns": 64, "regions": [[0, 0, 64, 8]]}]
    (copy / "deid" / "pixels.yaml").write_text(yaml.safe_dump(pixels), "utf-8")
    return copy


def test_burned_in_text_is_held_back_without_a_rule(tmp_path: Path) -> None:
    raw = _bytes(burned_in_us(generate_uid()))
    held = prepare(raw, Recipe.build(MAPPINGS, (), SECRET))
    assert held.status == "held" and "Burned In Annotation is YES" in held.reason
    assert held.output == b""
    other = _bytes(burned_in_us(generate_uid(), model="Other"))
    recipe = Recipe.build(_mappings_with_rule(tmp_path), (), SECRET)
    assert prepare(other, recipe).status == "held"  # the rule is for another model


def test_a_cleaning_rule_blanks_the_region_and_restore_brings_it_back(tmp_path: Path) -> None:
    raw = _bytes(burned_in_us(generate_uid()))
    prepared = prepare(raw, Recipe.build(_mappings_with_rule(tmp_path), (), SECRET))
    assert prepared.status == "sent"
    out = dcmread(BytesIO(prepared.output))
    pixels = out.PixelData
    assert set(pixels[:8 * 64]) == {0} and pixels[8 * 64:] == dcmread(BytesIO(raw)).PixelData[
        8 * 64:]
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    row = SimpleNamespace(body_sha256=prepared.body_sha256,
                          original_sha256=prepared.original_sha256)
    assert original_bytes(prepared.output, row, prepared.record) == raw  # type: ignore[arg-type]


def test_a_file_that_is_not_dicom_is_refused_clearly() -> None:
    from bridge.errors import Rejected

    with pytest.raises(Rejected, match="not a DICOM object"):
        prepare(b"hello", Recipe.build(MAPPINGS, (), SECRET))

"""The direct response encoder writes exactly what build_identifier + pydicom write."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from bridge.mapping.worklist.dataset import (
    Code,
    OtherId,
    ResponseOptions,
    WorklistItem,
    build_identifier,
)
from bridge.mapping.worklist.encoder import response_encoder
from bridge.mapping.worklist.query import ReturnKey, parse_worklist_query
from tests.unit.test_worklist_dataset import ITEM, WANTED, WANTED_IN_SPS

SYNTAXES = [pytest.param(True, id="implicit"), pytest.param(False, id="explicit")]
OPTIONS = [
    pytest.param(ResponseOptions(), id="utf8"),
    pytest.param(ResponseOptions(latin_only=True), id="latin-uk"),
    pytest.param(ResponseOptions(latin_only=True, language="ru"), id="latin-ru"),
    pytest.param(ResponseOptions(character_set=""), id="no-charset"),
]


def request(*, sps_items: bool = True, extra: Dataset | None = None) -> Dataset:
    ds = Dataset()
    for keyword in WANTED:
        setattr(ds, keyword, "")
    ds.OtherPatientIDsSequence = [Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = ""
    ds.OtherPatientIDsSequence[0].IssuerOfPatientID = ""
    ds.RequestedProcedureCodeSequence = []  # without an item: everything we have
    ds.OrderPlacerIdentifierSequence = []
    # Keys the bridge does not know come back empty, with the VR asked.
    ds.PatientWeight = None  # DS
    ds.add_new(0x00101010, "AS", None)  # PatientAge
    ds.add_new(0x00280010, "US", None)  # Rows: a binary VR, empty
    ds.add_new(0x00081110, "SQ", [])  # ReferencedStudySequence
    ds.ReferencedPatientSequence = [Dataset()]
    ds.ReferencedPatientSequence[0].ReferencedSOPClassUID = ""
    sps = Dataset()
    if sps_items:
        for keyword in WANTED_IN_SPS:
            setattr(sps, keyword, "")
        sps.ScheduledProtocolCodeSequence = [Dataset()]
        sps.ScheduledProtocolCodeSequence[0].CodeValue = ""
        sps.ScheduledProtocolCodeSequence[0].CodeMeaning = ""
        sps.ScheduledProtocolCodeSequence[0].LongCodeValue = ""
        ds.ScheduledProcedureStepSequence = [sps]
    else:
        ds.ScheduledProcedureStepSequence = []
    if extra is not None:
        ds.update(extra)
    return ds


def keys_of(identifier: Dataset, implicit: bool) -> tuple[ReturnKey, ...]:
    """As the SCP sees them: the request decoded from the wire, then parsed."""
    from io import BytesIO

    from pynetdicom.dsutils import decode

    raw = encode(identifier, implicit, True)
    assert raw is not None
    return parse_worklist_query(decode(BytesIO(raw), implicit, True)).return_keys


def pydicom_bytes(item: WorklistItem, keys: tuple[ReturnKey, ...], options: ResponseOptions,
                  implicit: bool) -> bytes:
    data = encode(build_identifier(item, keys, options), implicit, True)
    assert data is not None
    return data


def random_items(count: int, *, ascii_only: bool = False) -> list[WorklistItem]:
    """Values of every length parity, empty, Cyrillic, multi-valued and long."""
    rng = random.Random(20261122)
    texts = ["", "A", "AB", "Ґалаґан^Олена", "Smith^John^^Dr", "X\\Y", "é", "Łódź",
             "Головний біль", "1.2.840.10008.5.1.4.31", "КТ голови " * 9]
    issuers = ["", "HOSP", "ЛІКАРНЯ"]
    codes = [None, Code("C", "L", "Зміст"), Code("Y" * 17, "", "")]
    base = ITEM
    if ascii_only:
        texts = [t for t in texts if t.isascii()] + ["Long text " * 9]
        issuers = issuers[:2]
        codes = [None, Code("C", "L", "Meaning"), Code("Y" * 17, "", "")]
        base = replace(ITEM, location="Building 2", performing_physician="Koval^Iryna")

    def text() -> str | None:
        return rng.choice([None, *texts])

    items = []
    for n in range(count):
        items.append(replace(
            base,
            patient_name=rng.choice(texts),
            patient_id=f"P{n}" * rng.randrange(1, 4),
            issuer_of_patient_id=rng.choice(issuers),
            birth_date=rng.choice([None, "19800101"]),
            sex=rng.choice([None, "F", "M", "O"]),
            other_ids=tuple(OtherId(f"O{i}", rng.choice(["", "NAT"]))
                            for i in range(rng.randrange(3))),
            accession=text(), reason=text(), procedure_description=text(),
            referring_physician=text(), requesting_physician=text(),
            study_instance_uid=rng.choice([None, "1.2.3", "1.2.34"]),
            procedure_code=rng.choice(codes),
            protocol_codes=tuple(Code(f"P{i}" * (i + 1), "LOCAL", rng.choice(texts) or "m")
                                 for i in range(rng.randrange(3))),
            station_name=text(), location=text(), description=text(),
            performing_physician=text(), start_time=rng.choice([None, "0930", "093000.5"]),
            placer_issuer=rng.choice(["", "HIS"]),
        ))
    return items


@pytest.mark.parametrize("implicit", SYNTAXES)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("sps_items", [True, False], ids=["sps-keys", "sps-all"])
def test_bytes_equal_pydicom(implicit: bool, options: ResponseOptions, sps_items: bool) -> None:
    keys = keys_of(request(sps_items=sps_items), implicit)
    encoder = response_encoder(keys, options, implicit_vr=implicit, little_endian=True,
                               deflated=False)
    assert encoder is not None
    written = 0
    ascii_only = options.character_set == "" and not options.latin_only
    for item in [ITEM, WorklistItem(), *random_items(200, ascii_only=ascii_only)]:
        fast = encoder.encode(item)
        if fast is None:  # needs pydicom: only text the character set cannot hold
            assert item is ITEM and ascii_only
            continue
        assert fast == pydicom_bytes(item, keys, options, implicit), item
        written += 1
    assert written > 50


def test_text_outside_the_repertoire_is_left_to_pydicom() -> None:
    keys = keys_of(request(), True)
    encoder = response_encoder(keys, ResponseOptions(character_set=""), implicit_vr=True,
                               little_endian=True, deflated=False)
    assert encoder is not None
    assert encoder.encode(ITEM) is None  # Cyrillic without a character set
    assert encoder.encode(WorklistItem(patient_name="Plain^Ascii")) is not None


@pytest.mark.parametrize(("options", "little_endian", "deflated"), [
    (ResponseOptions(character_set="ISO_IR 100"), True, False),
    (ResponseOptions(character_set="ISO 2022 IR 6\\ISO 2022 IR 144"), True, False),
    (ResponseOptions(), False, False),
    (ResponseOptions(), True, True),
])
def test_cases_it_does_not_cover_get_no_encoder(options: ResponseOptions, little_endian: bool,
                                                deflated: bool) -> None:
    keys = keys_of(request(), True)
    assert response_encoder(keys, options, implicit_vr=False, little_endian=little_endian,
                            deflated=deflated) is None


def test_a_known_key_asked_with_another_vr_gets_no_encoder() -> None:
    keys = (ReturnKey(0x00100010, "LO"),)  # PatientName is PN
    assert response_encoder(keys, ResponseOptions(), implicit_vr=False, little_endian=True,
                            deflated=False) is None

"""FHIR data types ↔ DICOM-shaped domain values (pure): local times, names, references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bridge.mapping.fhir.datatypes import (
    drop_unreferenced_contained,
    fhir_datetime_to_local,
    human_name_to_pn,
    instant,
    local_to_fhir_datetime,
    pn_display,
    pn_to_human_name,
    reference_parts,
)

KYIV = ZoneInfo("Europe/Kyiv")


@pytest.mark.parametrize(("value", "expected"), [
    ("2031-03-30T01:30:00Z", ("20310330", "043000")),  # after the spring change: UTC+3
    ("2031-03-30T00:30:00Z", ("20310330", "023000")),  # before it (01:00Z): UTC+2
    ("2031-05-02T09:30:00.250+03:00", ("20310502", "093000.250")),
    ("2031-05-02T09:30", ("20310502", "093000")),  # no offset: taken as local
    ("2031-05-02", ("20310502", None)),
    ("2031-05", (None, None)),
    ("not a date", (None, None)),
])
def test_fhir_times_become_local_dicom_values(value: str,
                                               expected: tuple[str | None, str | None]) -> None:
    assert fhir_datetime_to_local(value, KYIV) == expected


def test_local_dicom_values_carry_the_zone_offset_of_their_day() -> None:
    assert local_to_fhir_datetime("20310115", "0800", KYIV) == "2031-01-15T08:00:00+02:00"
    assert local_to_fhir_datetime("20310715", "080000.5", KYIV) == (
        "2031-07-15T08:00:00.500+03:00")
    assert local_to_fhir_datetime("20310715", None, KYIV) == "2031-07-15"
    assert local_to_fhir_datetime("2031", "0800", KYIV) is None
    moment = datetime(2031, 7, 15, 8, tzinfo=timezone(timedelta(hours=3)))
    assert instant(moment) == "2031-07-15T05:00:00.000Z"
    assert instant(datetime(2031, 7, 15, 5)) == "2031-07-15T05:00:00.000Z"  # naive is UTC
    assert datetime.fromisoformat(instant(moment).replace("Z", "+00:00")) == moment.astimezone(
        UTC)


def test_names_round_trip_through_dicom_pn() -> None:
    name = {"family": "Ґалаґан", "given": ["Олена", "Петрівна"], "prefix": ["Dr"],
            "suffix": ["PhD"]}
    pn = human_name_to_pn([{"use": "old", "family": "X"}, name])
    assert pn == "Ґалаґан^Олена^Петрівна^Dr^PhD"
    assert pn_to_human_name(pn) == {"use": "official", **name}
    assert human_name_to_pn([{"text": "Olena Galagan"}]) == "Olena Galagan"
    assert human_name_to_pn([]) is None
    assert pn_display("Galagan^Olena") == "Olena Galagan"


def test_references_and_contained_resources() -> None:
    assert reference_parts("Patient/12") == ("Patient", "12")
    assert reference_parts("http://h/fhir/Patient/12/_history/3") == ("Patient", "12")
    assert reference_parts("urn:uuid:1") is None and reference_parts("#p") is None
    resource = {"contained": [{"resourceType": "Device", "id": "d"},
                              {"resourceType": "Patient", "id": "p"},
                              {"resourceType": "Organization", "id": "o"}],
                "performer": [{"reference": "#d"}], "subject": {"reference": "Patient/1"}}
    resource["contained"][0]["owner"] = {"reference": "#o"}
    drop_unreferenced_contained(resource)
    assert [c["id"] for c in resource["contained"]] == ["d", "o"]

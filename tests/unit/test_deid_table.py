"""mappings/deid/basic_profile.yaml holds every row of PS3.15 Table E.1-1 (2024b) with the
standard's actions, and the plan a destination's options make of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bridge.config.settings import PROJECT_ROOT
from bridge.mapping.deid.profile import (
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    NEW_UID,
    REMOVE,
    load_profile,
    make_plan,
    resolve,
)

MAPPINGS = PROJECT_ROOT / "mappings"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "deid"
#: Cells where the extraction of the standard is wrong (see scripts/deid_table.py).
CORRECTIONS = {("(0008,1120)", "rtnUIDsOpt"): "K"}


def _table() -> dict[str, dict[str, object]]:
    data = yaml.safe_load((MAPPINGS / "deid" / "basic_profile.yaml").read_text("utf-8"))
    assert data["edition"] == "2024b"
    return {str(row["tag"]).upper(): row for row in data["attributes"]}


def test_every_row_of_the_2024b_table_is_there_with_its_basic_action() -> None:
    standard = json.loads((FIXTURES / "dicomanonymizer_e1_1.json").read_text("utf-8"))
    assert "2024b" in standard["edition"]
    table = _table()
    assert len(standard["rows"]) >= 600
    for row in standard["rows"]:
        mine = table.get(row["tag"].upper())
        assert mine is not None, f"{row['tag']} {row['name']} missing"
        assert mine["basic"] == row["basic"], row["tag"]


def test_option_columns_are_the_standards() -> None:
    options = yaml.safe_load((MAPPINGS / "deid" / "options.yaml").read_text("utf-8"))["options"]
    column_to_option = {o["column"]: name for name, o in options.items()}
    assert len(column_to_option) == 10
    table = _table()
    extraction = json.loads((FIXTURES / "ps3_15_table_e1_1.json").read_text("utf-8"))
    assert len(extraction) >= 460
    for row in extraction:
        mine = table[row["tag"].upper()]
        for column, option in column_to_option.items():
            expected = CORRECTIONS.get((row["tag"], column), row.get(column))
            assert mine.get(option) == expected, (row["tag"], option)


def test_rows_newer_than_the_extraction_say_their_options_are_inferred() -> None:
    table = _table()
    extraction = {r["tag"].upper() for r in json.loads(
        (FIXTURES / "ps3_15_table_e1_1.json").read_text("utf-8"))}
    newer = [row for tag, row in table.items() if tag not in extraction]
    assert newer and all(row.get("options_inferred") for row in newer)
    creation = table["(0008,0012)"]  # Instance Creation Date: a date added since
    assert creation["retain_full_dates"] == "K" and creation["retain_modified_dates"] == "C"


@pytest.mark.parametrize(("basic", "action"), [
    ("X", REMOVE), ("Z", EMPTY), ("D", DUMMY), ("U", NEW_UID), ("K", KEEP), ("C", CLEAN),
    ("X/Z", EMPTY), ("X/D", DUMMY), ("Z/D", DUMMY), ("X/Z/D", DUMMY), ("X/Z/U*", NEW_UID),
])
def test_combined_codes_take_the_choice_valid_for_every_type(basic: str, action: str) -> None:
    assert resolve(basic) == action


def test_options_override_the_basic_action() -> None:
    profile = load_profile(MAPPINGS)
    basic = make_plan(profile, ())
    assert basic.action(0x00080020) == EMPTY  # Study Date: Z
    assert basic.action(0x0020000D) == NEW_UID  # Study Instance UID: U
    assert basic.action(0x00181000) == DUMMY  # Device Serial Number: X/Z/D
    assert basic.action(0x50001000) == REMOVE  # Curve Data (50xx,xxxx)
    assert basic.action(0x00100010) == EMPTY  # Patient's Name: Z (a pseudonym is allowed)
    assert basic.action(0x00280010) is None  # Rows: not in the table
    full = make_plan(profile, ("retain_full_dates", "retain_uids", "retain_device_identity"))
    assert full.action(0x00080020) == KEEP
    assert full.action(0x0020000D) == KEEP
    assert full.action(0x00181000) == KEEP
    modified = make_plan(profile, ("retain_modified_dates", "clean_descriptors"))
    assert modified.action(0x00080020) == CLEAN
    assert modified.action(0x00081030) == CLEAN  # Study Description
    # Allergies: C under both Retain Patient Characteristics and Clean Descriptors; keep wins
    # where an option says K.
    assert make_plan(profile, ("retain_patient_characteristics",)).action(0x00102110) == CLEAN


def test_bad_options_are_refused() -> None:
    profile = load_profile(MAPPINGS)
    with pytest.raises(ValueError, match="unknown"):
        make_plan(profile, ("retain_everything",))
    with pytest.raises(ValueError, match="exclude"):
        make_plan(profile, ("retain_full_dates", "retain_modified_dates"))


def test_the_table_does_not_drift_from_its_generator() -> None:
    """The YAML is what scripts/deid_table.py makes of the fixtures (run it after changing
    them)."""
    import runpy
    import shutil
    import tempfile

    before = (MAPPINGS / "deid" / "basic_profile.yaml").read_text("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "basic_profile.yaml"
        shutil.copy(MAPPINGS / "deid" / "basic_profile.yaml", copy)
        try:
            runpy.run_path(str(PROJECT_ROOT / "scripts" / "deid_table.py"), run_name="__main__")
            after = (MAPPINGS / "deid" / "basic_profile.yaml").read_text("utf-8")
        finally:
            shutil.copy(copy, MAPPINGS / "deid" / "basic_profile.yaml")
    assert after == before

"""The safety check before an unscheduled exam is linked to an MIS patient, and the policy
table that declares it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.mapping.dicom.patient_check import Demographics, contradictions, names_match
from bridge.mapping.dicom.reconciliation import load_reconcile_policy
from bridge.mapping.tables import TableError

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


@pytest.mark.parametrize(("mis", "typed"), [
    ("Шевченко^Тарас^Григорович", "Шевченко^Тарас^Григорович"),
    ("Шевченко^Тарас^Григорович", "ШЕВЧЕНКО^ТАРАС"),           # no patronymic typed
    ("Шевченко^Тарас^Григорович", "SHEVCHENKO^TARAS"),          # KMU 55 in Latin letters
    ("Шевченко^Тарас", "Shevchenko^T"),                         # an initial
    ("Мʼясоїд^Євгенія", "Мясоїд^Євгенія"),                      # the apostrophe left out
    ("Мʼясоїд^Євгенія", "Miasoid^Yevheniia"),                   # KMU 55 drops it too
    ("Щербаков^Юрий", "Shcherbakov^Iurii"),                     # Russian by ICAO 9303
    ("O'Brien^Sean", "OBRIEN^SEAN"),
    ("Ґалаґан^Олена", "GALAGAN^OLENA==Ґалаґан^Олена"),          # any PN group counts
    ("Ґалаґан^Олена", ""),                                      # nothing typed
])
def test_the_same_person(mis: str, typed: str) -> None:
    assert names_match(mis, typed)


@pytest.mark.parametrize(("mis", "typed"), [
    ("Шевченко^Тарас", "Коваленко^Тарас"),                      # another family
    ("Шевченко^Тарас", "Шевченко^Петро"),                       # another given name
    ("Шевченко^Тарас^Григорович", "Шевченко^Тарас^Іванович"),   # another patronymic
    ("Шевченко^Тарас", "Unknown^Patient"),
    ("Шевченко^Тарас", "Shevchenka^Taras"),
])
def test_another_person(mis: str, typed: str) -> None:
    assert not names_match(mis, typed)


def test_contradictions_name_the_checks_that_fail() -> None:
    mis = Demographics("Ґалаґан^Олена", "19850315")
    checks = ("birth_date", "name")
    assert contradictions(mis, Demographics("Galagan^Olena", "19850315"), checks) == ()
    assert contradictions(mis, Demographics("Galagan^Olena", ""), checks) == ()
    assert contradictions(mis, Demographics("Galagan^Olena", "19850316"), checks) == (
        "birth_date",)
    assert contradictions(mis, Demographics("Petrenko^Ivan", "19850316"), checks) == (
        "birth_date", "name")
    assert contradictions(mis, Demographics("Petrenko^Ivan", "19850316"), ("name",)) == (
        "name",)


def test_the_shipped_policy_links_unordered_studies_after_both_checks() -> None:
    policy = load_reconcile_policy(MAPPINGS)
    assert (policy.unordered, policy.patient_checks, policy.late_order_days) == (
        "link", frozenset({"birth_date", "name"}), 30)
    assert load_reconcile_policy(MAPPINGS, "queue").unordered == "queue"


@pytest.mark.parametrize(("rule", "message"), [
    ("action: maybe", "unordered_study.action"),
    ("checks: [shoe_size]", "unordered_study.checks"),
    ("late_order_days: many", "late_order_days"),
    ("late_order_days: -1", "late_order_days"),
])
def test_a_bad_rule_names_the_key(tmp_path: Path, rule: str, message: str) -> None:
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "reconciliation.yaml").write_text(
        f"match_order: [accession]\nunordered_study:\n  {rule}\n", encoding="utf-8")
    with pytest.raises(TableError, match=message):
        load_reconcile_policy(tmp_path)

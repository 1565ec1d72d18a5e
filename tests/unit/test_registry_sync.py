"""The pure parts of the registry sync: the search it sends, pages, subjects, the watermark,
and the poller's "pull now" rule (a trigger during a pull makes exactly one more pull)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.config.settings import Settings, load_settings
from bridge.errors import Rejected, Transient
from bridge.jobs.scheduler import make_scheduler
from bridge.services.fhir.registry_poll import RegistryPoller
from bridge.services.fhir.registry_sync import (
    BOUNDARY_OVERLAP,
    PullResult,
    SearchPlan,
    Watermark,
    format_instant,
    is_settled,
    local_reference,
    next_watermark,
    parse_instant,
    read_page,
    subject_reference,
    version_of,
)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path, **overrides)


# ----------------------------------------------------------------------------- the search


def test_default_search_imports_active_referrals_of_this_facility(tmp_path: Path) -> None:
    plan = SearchPlan.from_settings(make_settings(
        tmp_path, fhir_facility_identifier="urn:oid:1.2.804.2|FAC-7"))
    assert plan.import_statuses == {"active"}
    assert ("performer.identifier", "urn:oid:1.2.804.2|FAC-7") in plan.params
    assert all(key != "status" for key, _ in plan.params)


def test_first_search_filters_status_on_the_registry(tmp_path: Path) -> None:
    plan = SearchPlan.from_settings(make_settings(
        tmp_path, fhir_registry_search="status=active,on-hold&category=http://snomed.info/sct|363679005"))
    params = plan.search_params(None, page_size=50)
    assert ("status", "active,on-hold") in params
    assert ("category", "http://snomed.info/sct|363679005") in params
    assert ("_count", "50") in params and ("_sort", "-_lastUpdated") in params
    assert ("_include", "ServiceRequest:subject") in params
    assert not [key for key, _ in params if key == "_lastUpdated"]


def test_later_searches_ask_for_every_status_since_the_watermark(tmp_path: Path) -> None:
    plan = SearchPlan.from_settings(make_settings(tmp_path))
    params = dict(plan.search_params(Watermark("2026-03-01T10:00:07.250Z")))
    assert "status" not in params
    assert params["_lastUpdated"] == "gt2026-03-01T10:00:02.250Z"  # BOUNDARY_OVERLAP earlier
    assert timedelta(seconds=5) == BOUNDARY_OVERLAP


def test_after_the_first_order_but_before_any_stamp_every_status_is_read(tmp_path: Path) -> None:
    params = dict(SearchPlan.from_settings(make_settings(tmp_path)).search_params(Watermark(None)))
    assert "status" not in params and "_lastUpdated" not in params


def test_which_statuses_create_orders(tmp_path: Path) -> None:
    plan = SearchPlan.from_settings(make_settings(tmp_path, fhir_registry_search="status=active"))
    assert plan.imports("active")
    assert not plan.imports("revoked") and not plan.imports(None)
    anything = SearchPlan.from_settings(make_settings(tmp_path, fhir_registry_search=""))
    assert anything.import_statuses is None and anything.imports("revoked")


def test_a_status_modifier_is_passed_on_unchanged(tmp_path: Path) -> None:
    plan = SearchPlan.from_settings(make_settings(
        tmp_path, fhir_registry_search="status:not=draft"))
    assert plan.import_statuses is None
    assert ("status:not", "draft") in plan.search_params(Watermark(None))


@pytest.mark.parametrize("facility", ["FAC-7", "urn:oid:1.2|", "|"])
def test_a_facility_without_system_and_value_is_refused(tmp_path: Path, facility: str) -> None:
    with pytest.raises(Rejected, match=r"system\|value"):
        SearchPlan.from_settings(make_settings(tmp_path, fhir_facility_identifier=facility))


def test_a_search_that_is_no_query_string_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Rejected, match="BRIDGE_FHIR_REGISTRY_SEARCH"):
        SearchPlan.from_settings(make_settings(tmp_path, fhir_registry_search="status"))


# ----------------------------------------------------------------------------- instants


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-01T10:00:07.250Z", datetime(2026, 3, 1, 10, 0, 7, 250000, tzinfo=UTC)),
    ("2026-03-01T12:00:07+02:00", datetime(2026, 3, 1, 10, 0, 7, tzinfo=UTC)),
    ("2026-03-01T10:00:07.123456Z", datetime(2026, 3, 1, 10, 0, 7, 123456, tzinfo=UTC)),
])
def test_instants_are_read_with_their_zone(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize("text", ["2026-03-01T10:00:07", "yesterday", "2026-13-01T00:00:00Z"])
def test_an_instant_without_zone_or_invalid_is_refused(text: str) -> None:
    with pytest.raises(Rejected):
        parse_instant(text)


def test_search_bounds_are_utc_milliseconds_rounded_down() -> None:
    kyiv = datetime(2026, 3, 1, 12, 0, 7, 999999, tzinfo=UTC).astimezone(ZoneInfo("Europe/Kyiv"))
    assert kyiv.hour == 14
    assert format_instant(kyiv) == "2026-03-01T12:00:07.999Z"


# ----------------------------------------------------------------------------- pages, subjects


def sr(rid: str, stamp: str, version: str = "1", **more: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "active",
            "meta": {"versionId": version, "lastUpdated": stamp}, **more}


def test_a_page_separates_matches_includes_and_warnings() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    page = read_page({"resourceType": "Bundle", "type": "searchset", "total": 7, "entry": [
        {"resource": sr("a", "2026-03-01T10:00:00Z"), "search": {"mode": "match"}},
        {"resource": sr("b", "2026-03-01T10:00:00Z")},  # mode left out: a match
        {"resource": patient, "search": {"mode": "include"}},
        {"resource": {"resourceType": "OperationOutcome",
                      "issue": [{"severity": "warning", "diagnostics": "_include ignored"}]},
         "search": {"mode": "outcome"}},
        {"fullUrl": "urn:uuid:no-resource"},
    ]})
    assert [m["id"] for m in page.matches] == ["a", "b"]
    assert page.included == {"Patient/p1": patient}
    assert page.total == 7 and page.warnings == ["_include ignored"]


def test_a_page_without_total_or_entries() -> None:
    page = read_page({"resourceType": "Bundle", "type": "searchset"})
    assert page.matches == [] and page.total is None


@pytest.mark.parametrize(("reference", "local"), [
    ("Patient/1", "Patient/1"),
    ("Patient/1/_history/3", "Patient/1"),
    ("http://registry.test/fhir/Patient/1", "Patient/1"),
])
def test_local_references(reference: str, local: str) -> None:
    assert local_reference(reference) == local


def test_only_literal_subject_references_are_fetched() -> None:
    assert subject_reference(sr("a", "x", subject={"reference": "Patient/9"})) == "Patient/9"
    assert subject_reference(sr("a", "x", subject={"reference": "#p"})) is None
    logical = {"identifier": {"system": "urn:oid:1", "value": "MRN1"}}
    assert subject_reference(sr("a", "x", subject=logical)) is None
    assert subject_reference(sr("a", "x")) is None


def test_the_version_is_the_version_id_else_the_stamp() -> None:
    assert version_of(sr("a", "2026-03-01T10:00:00Z", version="4")) == "4"
    assert version_of({"meta": {"lastUpdated": "2026-03-01T10:00:00Z"}}) == (
        "2026-03-01T10:00:00Z")


# ----------------------------------------------------------------------------- the watermark


def test_the_watermark_is_the_newest_stamp_with_the_versions_near_it() -> None:
    seen = {"ServiceRequest/old": ("2026-03-01T09:00:00.000Z", "1"),
            "ServiceRequest/near": ("2026-03-01T09:59:57.000Z", "2"),
            "ServiceRequest/new": ("2026-03-01T10:00:00.000Z", "5")}
    mark = next_watermark(None, seen)
    assert mark == Watermark("2026-03-01T10:00:00.000Z",
                             {"ServiceRequest/near": "2", "ServiceRequest/new": "5"})


def test_the_watermark_never_goes_back_and_stays_without_news() -> None:
    before = Watermark("2026-03-01T10:00:00.000Z", {"ServiceRequest/a": "3"})
    assert next_watermark(before, {}) == before
    older = {"ServiceRequest/b": ("2026-03-01T09:59:58.000Z", "1")}
    after = next_watermark(before, older)
    assert after is not None and after.last_updated == before.last_updated
    assert after.boundary == {"ServiceRequest/a": "3", "ServiceRequest/b": "1"}


def test_the_watermark_compares_instants_not_text() -> None:
    seen = {"ServiceRequest/z": ("2026-03-01T12:00:00+03:00", "1"),  # 09:00 UTC
            "ServiceRequest/u": ("2026-03-01T10:00:00Z", "1")}
    mark = next_watermark(None, seen)
    assert mark is not None and mark.last_updated == "2026-03-01T10:00:00Z"
    assert next_watermark(None, {}) is None


def test_the_watermark_survives_its_storage_format() -> None:
    mark = Watermark("2026-03-01T10:00:00.000Z", {"ServiceRequest/a": "3"})
    assert Watermark.from_json(mark.to_json()) == mark
    assert Watermark.from_json(Watermark(None).to_json()) == Watermark(None)


def test_a_pull_is_settled_when_the_total_never_changed() -> None:
    assert is_settled([]) and is_settled([3, 3, 3]) and is_settled([None, None])
    assert not is_settled([3, 2])


def test_the_summary_names_counts_only() -> None:
    result = PullResult(pages=2, created=3, failed=1, watermark="2026-03-01T10:00:00Z",
                        settled=False)
    text = result.summary()
    assert "3 created" in text and "1 failed" in text and "kept" in text


# ----------------------------------------------------------------------------- the poller


class GatedSync:
    """Stands in for RegistrySync.pull: each pull waits until the test lets it finish."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.pulls = 0
        self.fail_with: Exception | None = None

    def pull(self) -> PullResult:
        self.pulls += 1
        self.started.release()
        assert self.release.acquire(timeout=10)
        if self.fail_with is not None:
            raise self.fail_with
        return PullResult()


def poller_with(gated: GatedSync) -> RegistryPoller:
    poller = RegistryPoller(gated, make_scheduler())  # type: ignore[arg-type]
    return poller


def test_triggers_during_a_pull_make_exactly_one_more_pull() -> None:
    gated = GatedSync()
    poller = poller_with(gated)
    runner = threading.Thread(target=poller.run)
    runner.start()
    assert gated.started.acquire(timeout=10)
    for _ in range(3):  # three notifications while the first pull runs
        assert poller.trigger_now()
    poller.run()  # the scheduler firing meanwhile: absorbed, too
    gated.release.release()
    assert gated.started.acquire(timeout=10)  # the one repeat
    gated.release.release()
    runner.join(timeout=10)
    assert not runner.is_alive() and gated.pulls == 2


def test_a_failed_pull_is_remembered_and_the_next_one_clears_it() -> None:
    gated = GatedSync()
    poller = poller_with(gated)
    gated.fail_with = Transient("FHIR server answered 503 to GET ServiceRequest")
    gated.release.release()
    poller.run()
    assert poller.last_error == "FHIR server answered 503 to GET ServiceRequest"
    gated.fail_with = None
    gated.release.release()
    poller.run()
    assert poller.last_error is None and poller.last_result == PullResult()


def test_trigger_now_runs_the_registered_pull_at_once() -> None:
    gated = GatedSync()
    scheduler = make_scheduler()
    poller = RegistryPoller(gated, scheduler)  # type: ignore[arg-type]
    assert not poller.trigger_now()  # not started: nothing can run it
    poller.register(3600, first_run_now=False)
    scheduler.start()
    try:
        assert poller.trigger_now()
        assert gated.started.acquire(timeout=10)
        gated.release.release()
    finally:
        scheduler.shutdown()
    assert gated.pulls == 1

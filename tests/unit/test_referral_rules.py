"""The referral Task state machine and the Subscription rules (pure)."""

from __future__ import annotations

import pytest

from bridge.errors import Conflict, MappingFailed
from bridge.mapping.fhir.version import check_resource
from bridge.mapping.referrals import subscriptions as subs
from bridge.mapping.referrals import workflow as wf

ALLOWED = {
    ("requested", "received"), ("requested", "accepted"), ("requested", "rejected"),
    ("requested", "cancelled"), ("received", "accepted"), ("received", "rejected"),
    ("received", "cancelled"), ("accepted", "in-progress"), ("accepted", "completed"),
    ("accepted", "cancelled"), ("accepted", "failed"), ("in-progress", "completed"),
    ("in-progress", "cancelled"), ("in-progress", "failed"),
}


@pytest.mark.parametrize("current", wf.STATUSES)
@pytest.mark.parametrize("wanted", wf.STATUSES)
def test_every_pair_of_statuses(current: str, wanted: str) -> None:
    if (current, wanted) in ALLOWED:
        assert wf.check_move(current, wanted) == wf.Move(current, wanted)
    else:
        with pytest.raises(Conflict) as refused:
            wf.check_move(current, wanted)
        assert current in refused.value.message and wanted in refused.value.message


def test_ended_states_are_final_and_unknown_ones_refused() -> None:
    assert all(not wf.TRANSITIONS[s] for s in wf.ENDED)
    with pytest.raises(MappingFailed):
        wf.check_move("requested", "on-hold")


@pytest.mark.parametrize(("side", "wanted", "may"), [
    ("requester", "cancelled", True), ("requester", "accepted", False),
    ("requester", "completed", False), ("performer", "accepted", True),
    ("performer", "cancelled", False), ("system", "cancelled", True), ("nobody", "received", False),
])
def test_who_may_move(side: str, wanted: str, may: bool) -> None:
    assert wf.side_may(side, wanted) is may


TASK = {"resourceType": "Task", "id": "7", "status": "completed",
        "requester": {"reference": "Practitioner/3"}, "for": {"reference": "Patient/9"}}


@pytest.mark.parametrize(("criteria", "hit"), [
    ("Task", True), ("Task?status=completed", True), ("Task?status=accepted,completed", True),
    ("Task?status=accepted", False), ("Task?requester=Practitioner/3&patient=Patient/9", True),
    ("Task?requester=Practitioner/4", False), ("Task?_id=7", True),
])
def test_subscription_criteria(criteria: str, hit: bool) -> None:
    assert subs.matches(criteria, TASK) is hit


@pytest.mark.parametrize("criteria", ["Observation", "Task?code=x"])
def test_criteria_the_bridge_cannot_evaluate_are_refused(criteria: str) -> None:
    with pytest.raises(MappingFailed):
        subs.parse_criteria(criteria)


def test_r5_notification_bundle_is_valid() -> None:
    task = {"resourceType": "Task", "id": "7", "status": "completed", "intent": "order"}
    bundle = subs.notification_bundle(1, task, 3, "https://bridge.example/fhir")
    check_resource("R5", bundle, expected_type="Bundle")
    assert bundle["entry"][0]["resource"]["resourceType"] == "SubscriptionStatus"


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_subscription_resources_are_valid(version: str) -> None:
    resource = subs.subscription_resource(1, "Task?status=completed", "https://mis/fhir",
                                          "application/fhir+json", "active", "", version)
    check_resource(version, resource, expected_type="Subscription")
    assert subs.subscription_from_fhir(resource, version)[:3] == (
        "Task?status=completed", "https://mis/fhir", "application/fhir+json")


def _view(**changes: object) -> object:
    from datetime import UTC, datetime

    from bridge.mapping.referrals.fhir import ReferralView
    values: dict[str, object] = dict(
        id=7, patient_id=3, requester_id=1, performer_kind="consultant", performer_org_id=2,
        owner_id=5, code="CARD", code_system="urn:local", code_display="Cardiology opinion",
        modality=None, reason="murmur", priority="routine", status="rejected",
        business_status="declined", status_reason="not our patient", external_id="MIS-1",
        source="hl7", version=3, created_at=datetime(2026, 12, 7, 9, tzinfo=UTC),
        updated_at=datetime(2026, 12, 7, 10, tzinfo=UTC), study_ids=(11, 12),
        report_ids=(4,), document_ids=(9,))
    values.update(changes)
    return ReferralView(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_referral_resources_are_valid_in_both_versions(version: str) -> None:
    from datetime import UTC, datetime

    from bridge.mapping.referrals import fhir as rf
    view = _view()
    task = check_resource(version, rf.task_resource(view, version), expected_type="Task")
    assert task["status"] == "rejected" and task["focus"]["reference"] == "ServiceRequest/ref-7"
    request = rf.service_request_resource(view, version)
    check_resource(version, request, expected_type="ServiceRequest")
    assert request["status"] == "revoked"
    report = rf.report_resource(rf.ReportView(
        id=4, referral_id=7, patient_id=3, study_id=11, status="final", code="18748-4",
        code_display="Diagnostic imaging study", conclusion="Normal", author_id=5,
        presented_form=({"contentType": "application/pdf", "data": "JVBERg=="},),
        issued_at=datetime(2026, 12, 7, 11, tzinfo=UTC)), version)
    check_resource(version, report, expected_type="DiagnosticReport")
    assert ("study" if version == "R5" else "imagingStudy") in report
    for resource in (rf.practitioner_resource(5, "Dr Who", "ID-5", True),
                     rf.practitioner_role_resource(5, "consultant", 2, "cardiology", True),
                     rf.organization_resource(2, "CN-1", "Cardiology", "consultants", True)):
        check_resource(version, resource)

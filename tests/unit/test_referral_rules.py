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

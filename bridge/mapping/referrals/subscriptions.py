"""Which Subscriptions a Task change is for, and what a delivery looks like.

Criteria are Task searches with the parameters the bridge searches Tasks by (``status``,
``requester``, ``owner``, ``patient``, ``_id``), comma meaning OR, several parameters AND.
R4 rest-hook with a payload: ``PUT [endpoint]/Task/[id]`` with the Task; without one: a
``POST [endpoint]`` with no body. R5 (topic-based): a ``POST [endpoint]`` of a
``subscription-notification`` Bundle: the SubscriptionStatus, then the Task.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl

from bridge.errors import MappingFailed

PARAMS: Final = {"status": "status", "requester": "requester", "owner": "owner",
                 "patient": "for", "_id": "id"}
#: The topic R5 subscribers name (a SubscriptionTopic the bridge describes in its docs).
TOPIC: Final = "urn:bridge:topic:referral-task"


def parse_criteria(criteria: str) -> list[tuple[str, frozenset[str]]]:
    """The criteria as (element, accepted values); MappingFailed when the bridge cannot
    evaluate them (another resource type, an unknown parameter)."""
    kind, _, query = criteria.partition("?")
    if kind != "Task":
        raise MappingFailed("Subscriptions here are for Task (referral) changes: criteria "
                            "'Task' or 'Task?status=...'", location="Subscription.criteria")
    parsed = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in PARAMS:
            raise MappingFailed(f"Task criteria take {', '.join(sorted(PARAMS))}, not {name}",
                                location="Subscription.criteria")
        parsed.append((PARAMS[name], frozenset(v for v in value.split(",") if v)))
    return parsed


def _value(task: dict[str, Any], element: str) -> str:
    value = task.get(element)
    if isinstance(value, dict):
        return str(value.get("reference", ""))
    return str(value or "")


def matches(criteria: str, task: dict[str, Any]) -> bool:
    return all(_value(task, element) in accepted
               for element, accepted in parse_criteria(criteria))


def notification_bundle(subscription_id: int, task: dict[str, Any], event_number: int,
                        base: str) -> dict[str, Any]:
    """An R5 ``subscription-notification`` Bundle for one Task change."""
    status = {
        "resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
        "subscription": {"reference": f"{base}/Subscription/{subscription_id}"},
        "topic": TOPIC,
        "notificationEvent": [{"eventNumber": str(event_number),
                               "focus": {"reference": f"{base}/Task/{task['id']}"}}],
    }
    return {"resourceType": "Bundle", "type": "subscription-notification",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "entry": [{"fullUrl": f"urn:uuid:status-{subscription_id}-{event_number}",
                       "resource": status},
                      {"fullUrl": f"{base}/Task/{task['id']}", "resource": task}]}


def subscription_resource(sid: int, criteria: str, endpoint: str, payload: str, status: str,
                          reason: str, version: str) -> dict[str, Any]:
    if version == "R5":
        resource: dict[str, Any] = {
            "resourceType": "Subscription", "id": str(sid), "status": status, "topic": TOPIC,
            "filterBy": [{"resourceType": "Task", "filterParameter": "criteria",
                          "value": criteria}],
            "channelType": {"system": "http://terminology.hl7.org/CodeSystem/"
                                      "subscription-channel-type", "code": "rest-hook"},
            "endpoint": endpoint, "content": "full-resource" if payload else "empty"}
        if payload:
            resource["contentType"] = payload
    else:
        channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
        if payload:
            channel["payload"] = payload
        resource = {"resourceType": "Subscription", "id": str(sid), "status": status,
                    "reason": reason or "referral notifications", "criteria": criteria,
                    "channel": channel}
    return resource


def subscription_from_fhir(resource: dict[str, Any], version: str
                           ) -> tuple[str, str, str, list[str]]:
    """(criteria, endpoint, payload, headers) of a posted Subscription."""
    if version == "R5":
        filters = resource.get("filterBy") or []
        criteria = next((str(f.get("value")) for f in filters
                         if isinstance(f, dict) and f.get("value")), "Task")
        if not criteria.startswith("Task"):
            criteria = "Task?" + criteria
        endpoint = str(resource.get("endpoint") or "")
        content = str(resource.get("content") or "full-resource")
        payload = "" if content == "empty" else str(resource.get("contentType")
                                                     or "application/fhir+json")
        headers = [f"{p.get('name')}: {p.get('value')}" for p in resource.get("parameter", [])
                   if isinstance(p, dict) and p.get("name")]
        channel_type = (resource.get("channelType") or {}).get("code", "rest-hook")
    else:
        criteria = str(resource.get("criteria") or "")
        channel = resource.get("channel") or {}
        endpoint = str(channel.get("endpoint") or "")
        payload = str(channel.get("payload") or "")
        headers = [str(h) for h in channel.get("header", [])]
        channel_type = channel.get("type", "")
    if channel_type != "rest-hook":
        raise MappingFailed("only rest-hook channels are delivered",
                            location="Subscription.channel.type")
    if not endpoint.startswith(("http://", "https://")):
        raise MappingFailed("the endpoint is an http(s) URL",
                            location="Subscription.channel.endpoint")
    if payload not in ("", "application/fhir+json", "application/json"):
        raise MappingFailed("payload is application/fhir+json or none",
                            location="Subscription.channel.payload")
    parse_criteria(criteria)
    return criteria, endpoint, payload, headers

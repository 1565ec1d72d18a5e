"""Notifications of referral changes to the parties' systems (FHIR Subscriptions).

Every Task change enqueued a ``referral_notify`` job in its own transaction (the durable
outbox). The fan-out handler turns it into one ``subscription_deliver`` job per matching
active Subscription; the delivery handler sends it. A receiver that is down or answers 5xx
is retried with back-off; one that refuses (4xx) leaves the job in the failed list, where an
operator requeues it (``/api/jobs``). The dedup key makes a requeue or a duplicate fan-out
send each change to each subscriber once.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Final

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import NotFound, Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, RetryPolicy
from bridge.mapping.referrals import fhir as rf
from bridge.mapping.referrals import subscriptions as subs
from bridge.services.auth.principal import Principal
from bridge.services.referrals.views import referral_view
from bridge.services.referrals.workflow import NOTIFY_QUEUE
from bridge.store.audit import append_audit
from bridge.store.db import read_session
from bridge.store.referral_models import Referral, Subscription

log = logging.getLogger("bridge.referrals")
DELIVER_QUEUE: Final = "subscription_deliver"
RETRY_POLICY: Final = RetryPolicy(max_attempts=12, base_seconds=2.0, max_seconds=300.0)


def create_subscription(session: Session, principal: Principal, resource: dict[str, Any],
                        version: str) -> Subscription:
    criteria, endpoint, payload, headers = subs.subscription_from_fhir(resource, version)
    subscription = Subscription(criteria=criteria, endpoint=endpoint, payload=payload,
                                headers=headers, status="active", reason="",
                                created_by=principal.actor[:128])
    session.add(subscription)
    session.flush()
    append_audit(session, actor=principal.actor, action="subscribe", entity="subscription",
                 entity_id=str(subscription.id), details={"criteria": criteria})
    return subscription


def subscription_fhir(subscription: Subscription, version: str) -> dict[str, Any]:
    return subs.subscription_resource(subscription.id, subscription.criteria,
                                      subscription.endpoint, subscription.payload,
                                      subscription.status, subscription.reason, version)


def load_subscription(session: Session, subscription_id: str) -> Subscription:
    found = (session.get(Subscription, int(subscription_id))
             if subscription_id.isdigit() and len(subscription_id) < 18 else None)
    if found is None:
        raise NotFound(f"Subscription/{subscription_id} is not known", location="id")
    return found


class FanOut:
    """``referral_notify`` → one ``subscription_deliver`` job per matching Subscription."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.version = settings.fhir_version
        self.sessions = sessions

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        referral_id = int(job.payload["referral_id"])
        version = int(job.payload.get("version", 0))
        with self.sessions.begin() as session:
            referral = session.get(Referral, referral_id)
            if referral is None:
                raise Rejected(f"job {job.id}: referral {referral_id} is gone")
            task = rf.task_resource(referral_view(session, referral), self.version)
            active = session.execute(select(Subscription).where(
                Subscription.status == "active")).scalars().all()
            for subscription in active:
                if subs.matches(subscription.criteria, task):
                    queue.enqueue(session, queue=DELIVER_QUEUE, payload={
                        **job.payload, "subscription_id": subscription.id},
                        dedup_key=f"{subscription.id}:{referral_id}:{version}")


class Deliver:
    """Sends one notification; the job worker retries it on :class:`Transient`."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 client: httpx.Client | None = None) -> None:
        self.version = settings.fhir_version
        self.base = (settings.public_base_url.rstrip("/") + "/fhir"
                     if settings.public_base_url else "urn:bridge")
        self.sessions = sessions
        self.client = client or httpx.Client(timeout=15)

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        with read_session(self.sessions) as session:
            subscription = session.get(Subscription, int(job.payload["subscription_id"]))
            referral = session.get(Referral, int(job.payload["referral_id"]))
            if subscription is None or subscription.status != "active" or referral is None:
                log.info("notification job %s dropped: subscription or referral gone", job.id)
                return
            task = as_changed(rf.task_resource(referral_view(session, referral), self.version),
                              job.payload, self.version)
            endpoint, payload = subscription.endpoint.rstrip("/"), subscription.payload
            headers = dict(_header(h) for h in subscription.headers if ":" in h)
            sid = subscription.id
        if self.version == "R5":
            method, url = "POST", endpoint
            body: bytes | None = json.dumps(subs.notification_bundle(
                sid, task, int(job.payload.get("version", 0)), self.base)).encode()
        elif payload:
            method, url = "PUT", f"{endpoint}/Task/{task['id']}"
            body = json.dumps(task).encode()
        else:
            method, url, body = "POST", endpoint, None
        if body is not None:
            headers["Content-Type"] = "application/fhir+json"
        try:
            answer = self.client.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Transient(f"subscriber unreachable: {type(exc).__name__}") from None
        if answer.status_code >= 500 or answer.status_code == 429:
            raise Transient(f"subscriber answered {answer.status_code}")
        if answer.status_code >= 400:
            raise Rejected(f"subscriber refused the notification: {answer.status_code}")
        log.info("notification of referral %s (v%s) delivered to subscription %s",
                 task["id"], job.payload.get("version"), sid)


def as_changed(task: dict[str, Any], change: dict[str, Any], version: str) -> dict[str, Any]:
    """The Task as this change left it (status, reasons, owner, version), whatever happened
    since: each notification tells of its own change, and they may arrive out of order."""
    task = dict(task)
    task["status"] = str(change.get("status") or task["status"])
    task["meta"] = {"versionId": str(change.get("version")),
                    "lastUpdated": str(change.get("updated_at") or task["meta"]["lastUpdated"])}
    task["lastModified"] = task["meta"]["lastUpdated"]
    reason = str(change.get("reason") or "")
    task.pop("statusReason", None)
    if reason:
        task["statusReason"] = {"concept": {"text": reason}} if version == "R5" else {
            "text": reason}
    business = str(change.get("business_status") or "")
    task.pop("businessStatus", None)
    if business:
        task["businessStatus"] = {"text": business}
    owner = change.get("owner_id")
    if owner is not None:
        task["owner"] = {"reference": f"Practitioner/{owner}"}
    if task["status"] not in ("completed",):
        task.pop("output", None)
    return task


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


def notification_handlers(settings: Settings, sessions: sessionmaker[Session]
                          ) -> tuple[dict[str, Any], dict[str, RetryPolicy]]:
    """The job worker's handlers and retry policies for referral notifications."""
    return ({NOTIFY_QUEUE: FanOut(settings, sessions), DELIVER_QUEUE: Deliver(settings, sessions)},
            {NOTIFY_QUEUE: RetryPolicy(), DELIVER_QUEUE: RETRY_POLICY})

"""The web console in a real browser (Debian's headless Chromium through Selenium), on both
databases: every page opens with no console error, no request leaving the machine and no
serious accessibility violation (axe-core), and the main flows are clicked through. A
screenshot of each page is written to the test artefacts (``test-artifacts/screenshots``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import DicomPeer, Settings
from bridge.domain import Identifier, PatientData
from bridge.mapping.hl7.tables import load_hl7_tables
from bridge.mapping.links.signing import sign_link
from bridge.services.hl7.ingest import HL7Ingest
from bridge.services.links.secret import console_secret
from bridge.services.patients.mpi import upsert_patient
from bridge.store.archive_models import AuditRecord, Job, Study
from bridge.store.models import HL7Message, Order, Patient
from bridge.store.referral_models import AccessGrant
from tests.archive_factories import ArchivedStudy, SeriesPlan, Source, archive_study
from tests.browser_harness import (  # noqa: F401 (fixtures)
    Browser,
    browser_fixture,
    browser_session_fixture,
    format_all,
)
from tests.conftest import free_port, hl7_fixture
from tests.http_harness import Api, running_api
from tests.referral_harness import PASSWORD, log_in_everyone, make_directory

pytestmark = pytest.mark.integration
OPERATOR_PAGES = ("dashboard", "messages", "worklist", "reconciliation", "studies", "referrals",
                  "storage", "jobs", "audit")
CLINICIAN_PAGES = ("referrals", "studies")


@dataclass
class Console:
    api: Api
    queued: ArchivedStudy
    ct: ArchivedStudy
    failed_message: int

    @property
    def url(self) -> str:
        return self.api.url


@pytest.fixture
def console(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Console]:
    # A peer to forward to (nothing listens: forwards are only queued here), and a retention
    # longer than any test study's age, so that deleting one needs the override.
    settings = settings.model_copy(update={"retention_days": 36500, "dicom_peers": (
        DicomPeer(ae_title="ARCHIVE", host="127.0.0.1", port=free_port(), role="scp"),)})
    make_directory(session_factory)
    with session_factory.begin() as session:
        pk = upsert_patient(session, PatientData(identifiers=[Identifier("MRN-UI-1")],
                                                 name="Шевченко^Тарас", birth_date="19700309",
                                                 sex="M"))
        patient = session.get(Patient, pk)
        ct = archive_study(session, settings.archive_root, patient=patient,
                           description="CT chest", series=(
                               SeriesPlan(instances=12, description="Axial"),
                               SeriesPlan(instances=3, number=2, description="Scout")))
        queued = archive_study(session, settings.archive_root, source=Source(
            patient_id="UNKNOWN-7", name="Unknown^Patient", accession="ACC-NONE"),
            description="Queued CT")
        raw = hl7_fixture("orm_o01_nw.hl7")
        message = HL7Message(peer="127.0.0.1:40000", sending_application="MIS",
                             sending_facility="HOSP", control_id="C-UI-1",
                             message_type="ORM^O01", version="2.5", charset="utf-8", raw=raw,
                             text=raw.decode(), status="error", ack_code="AE",
                             error="PID-3 missing", error_location="PID-3")
        session.add(message)
        session.flush()
        failed = message.id
    ingest = HL7Ingest(session_factory, load_hl7_tables(settings.mappings_dir), settings)
    app: FastAPI = create_app(settings, session_factory, reprocess=ingest.reprocess,
                              metrics_registry=CollectorRegistry())
    with running_api(app, session_factory) as api:
        yield Console(api, queued, ct, failed)


def log_in(browser: Browser, console: Console, username: str) -> None:
    browser.open(f"{console.url}/console/login", wait_for="#username")
    browser.type("#username", username)
    browser.type("#password", PASSWORD)
    browser.click("#password-form button[type=submit]")
    browser.wait_for("#who")
    browser.wait_for_text(username, css="#who")


def assert_clean(browser: Browser, page: str) -> None:
    """No console error, nothing fetched from outside, no serious accessibility problem."""
    assert browser.console_errors() == [], format_all(browser.console_errors())
    assert browser.external_requests() == [], format_all(browser.external_requests())
    violations = browser.axe_violations()
    assert violations == [], f"{page}: {format_all(violations)}"
    browser.screenshot(f"console-{page}")


def expect_only_refusals(browser: Browser, status: int) -> None:
    """The console errors so far are the browser's own notes of the API refusing what the
    test sent on purpose (Chromium logs every 4xx answer), and nothing else."""
    errors = browser.console_errors()
    assert errors and all(f"status of {status}" in e.message for e in errors), \
        format_all(errors)


def visit(browser: Browser, console: Console, page: str, ready: str) -> None:
    browser.open(f"{console.url}/console/#/{page}")
    browser.wait_for(ready)
    browser.wait_for_text("", css="main")


def test_every_page_opens_clean_for_operators_and_clinicians(
        browser: Browser, console: Console) -> None:
    browser.open(f"{console.url}/console/login", wait_for="#username")
    assert_clean(browser, "login")
    log_in(browser, console, "ops")
    ready = {"dashboard": "#tiles .tile", "messages": "#message-list table",
             "worklist": "#worklist-list > *", "reconciliation": "#queue table",
             "studies": "#study-list > *", "referrals": "#inbox h3",
             "storage": "#storage-summary table", "jobs": "#job-list > *",
             "audit": "#audit-list > *"}
    for page in OPERATOR_PAGES:
        visit(browser, console, page, ready[page])
        assert_clean(browser, f"operator-{page}")
    browser.click("#logout")
    browser.wait_for("#username")
    log_in(browser, console, "gp")
    nav = [a.text for a in browser.driver.find_elements(By.CSS_SELECTOR, "#nav a")]
    assert nav == ["Studies", "Referrals"]
    for page in CLINICIAN_PAGES:
        visit(browser, console, page, ready[page])
        assert_clean(browser, f"clinician-{page}")
    browser.open(f"{console.url}/console/#/messages")
    browser.wait_for_text("not for your role", css="main")


def test_a_page_without_a_login_goes_to_the_login(browser: Browser, console: Console) -> None:
    browser.open(f"{console.url}/console/#/worklist")
    browser.wait_for("#username")
    assert "/console/login" in browser.driver.current_url
    browser.type("#username", "ops")
    browser.type("#password", "wrong")
    browser.click("#password-form button[type=submit]")
    browser.wait_for_text("wrong username or password", css="#message")
    browser.type("#password", "")
    browser.click("#password-form button[type=submit]")
    browser.wait_for_text("Enter your username and password", css="#message")


def test_an_operator_reprocesses_a_failed_message(browser: Browser, console: Console) -> None:
    log_in(browser, console, "ops")
    visit(browser, console, f"messages/{console.failed_message}", "#reprocess")
    segments = browser.text("#message-detail pre.segments")
    assert "PID|" in segments
    marked = browser.driver.find_elements(By.CSS_SELECTOR, "pre.segments .bad")
    assert marked and marked[0].text.startswith("PID|")
    browser.click("#reprocess")
    browser.wait_for_text("Reprocessed: processed, ACK AA", css="#message-detail")
    with console.api.session_factory() as session:
        row = session.get(HL7Message, console.failed_message)
        assert row is not None and row.status == "processed"
    assert_clean(browser, "message-reprocessed")


def test_an_operator_assigns_a_queued_study_and_sees_the_audit_record(
        browser: Browser, console: Console) -> None:
    log_in(browser, console, "ops")
    visit(browser, console, "reconciliation", "#queue table")
    browser.click("#queue button")
    browser.wait_for("#assign-patient")
    browser.click("#assign-patient button")  # empty: a clear message, nothing sent
    browser.wait_for_text("Enter the MIS patient ID", css="#assign-problem")
    browser.type("#assign-patient input[name=patient_id]", "NO-SUCH-PATIENT")
    browser.click("#assign-patient button")
    browser.wait_for_text("no MIS patient has this identifier", css="#assign-problem")
    expect_only_refusals(browser, 404)
    with console.api.session_factory() as session:
        assert session.execute(select(Study.reconciliation).where(
            Study.study_instance_uid == console.queued.study_instance_uid)).scalar_one() \
            == "queued"
    browser.type("#assign-patient input[name=patient_id]", "MRN-UI-1")
    browser.click("#assign-patient button")
    browser.wait_for_text("Study assigned", css="#reconciliation-message")
    browser.wait_for("#assign-audit table")
    assert "assign" in browser.text("#assign-audit")
    with console.api.session_factory() as session:
        assert session.execute(select(Study.reconciliation).where(
            Study.study_instance_uid == console.queued.study_instance_uid)).scalar_one() \
            != "queued"
    assert_clean(browser, "reconciliation-assigned")


def _shares(console: Console) -> list[AccessGrant]:
    with console.api.session_factory() as session:
        return list(session.execute(select(AccessGrant)).scalars())


def _set_date(browser: Browser, css: str, iso: str) -> None:
    """A date field's value, as the browser's date picker would set it (typing into one
    depends on the browser's locale)."""
    browser.driver.execute_script("arguments[0].value = arguments[1];", browser.wait_for(css), iso)


def _orders(console: Console, accession: str) -> list[Order]:
    """The orders with ``accession``, their steps loaded."""
    with console.api.session_factory() as session:
        return list(session.execute(select(Order).where(Order.accession == accession)
                                    .options(selectinload(Order.steps))).scalars())


def test_an_operator_creates_edits_and_cancels_an_order(
        browser: Browser, console: Console) -> None:
    log_in(browser, console, "ops")
    visit(browser, console, "worklist", "#worklist-list > *")
    browser.click("#new-order")
    browser.click("#order-form button[type=submit]")  # empty: a clear message, nothing sent
    browser.wait_for_text("Patient ID, modality and date are needed", css="#order-editor")
    browser.type("#order-form input[name=patient_id]", "MRN-UI-NEW")
    browser.type("#order-form input[name=name]", "Коваленко^Ірина")
    browser.type("#order-form input[name=accession]", "ACC-UI-1")
    browser.type("#order-form input[name=modality]", "CT")
    browser.type("#order-form input[name=station_ae]", "CT1")
    _set_date(browser, "#order-form input[name=start_date]", "2026-12-08")
    # A double submit (two clicks before the answer) sends once.
    browser.driver.execute_script(
        "const f = document.getElementById('order-form'); f.requestSubmit(); f.requestSubmit();")
    browser.wait_for_text("Order ACC-UI-1 created", css="#worklist-message")
    assert len(_orders(console, "ACC-UI-1")) == 1

    browser.click("#new-order")  # the same accession again: refused, nothing changed
    browser.type("#order-form input[name=patient_id]", "MRN-UI-NEW")
    browser.type("#order-form input[name=accession]", "ACC-UI-1")
    browser.type("#order-form input[name=modality]", "MR")
    _set_date(browser, "#order-form input[name=start_date]", "2026-12-09")
    browser.click("#order-form button[type=submit]")
    browser.wait_for_text("an order with this placer number or accession exists",
                          css="#order-editor")
    expect_only_refusals(browser, 409)
    (order,) = _orders(console, "ACC-UI-1")
    assert [step.modality for step in order.steps] == ["CT"]

    _set_date(browser, "#worklist-filters input[name=date]", "2026-12-08")
    browser.click("#worklist-filters button[type=submit]")
    browser.wait_for_text("ACC-UI-1", css="#worklist-list")
    row = "#worklist-list tbody tr"
    browser.click(f"{row} button.secondary")
    browser.type("#order-form input[name=description]", "CT chest, contrast")
    browser.click("#order-form button[type=submit]")
    browser.wait_for_text("Order ACC-UI-1 saved", css="#worklist-message")
    (order,) = _orders(console, "ACC-UI-1")
    assert order.steps[0].description == "CT chest, contrast"

    browser.driver.execute_script("window.confirm = () => true;")  # the browser's own dialog
    browser.click(f"{row} button.danger")
    browser.wait_for_text("Order ACC-UI-1 canceled", css="#worklist-message")
    (order,) = _orders(console, "ACC-UI-1")
    assert {step.status for step in order.steps} == {"CANCELED"}
    assert_clean(browser, "worklist-edited")


def test_an_operator_forwards_and_deletes_a_study(browser: Browser, console: Console) -> None:
    uid = console.ct.study_instance_uid
    log_in(browser, console, "ops")
    visit(browser, console, f"studies/{uid}", "#forward-form")
    browser.click("#forward-form button")
    browser.wait_for_text("Forward queued", css="#study-detail")
    with console.api.session_factory() as session:
        (job,) = session.execute(select(Job).where(Job.queue == "forward")).scalars().all()
        assert job.payload["destination"] == "ARCHIVE"
    browser.click("#delete-form button")  # no reason: a clear message, nothing sent
    browser.wait_for_text("Say why the study is deleted", css="#study-detail")
    browser.type("#delete-form input[name=reason]", "test study")
    browser.click("#delete-form button")
    browser.wait_for_text("under retention until", css="#study-detail")
    expect_only_refusals(browser, 409)
    with console.api.session_factory() as session:
        assert session.execute(select(Study.id).where(
            Study.study_instance_uid == uid)).first() is not None
    browser.click("#delete-form input[name=override_retention]")
    browser.click("#delete-form button")
    browser.wait_for_text("Study deleted", css="#study-detail")
    with console.api.session_factory() as session:
        assert session.execute(select(Study.id).where(
            Study.study_instance_uid == uid)).first() is None
        actions = session.execute(select(AuditRecord.action).where(
            AuditRecord.entity_id == uid)).scalars().all()
    assert {"forward", "delete"} <= set(actions)
    browser.screenshot("console-study-deleted")


def drawn(browser: Browser) -> int:
    return int(browser.driver.find_element(By.CSS_SELECTOR, ".stage canvas")
               .get_attribute("data-drawn") or 0)


def wait_until(browser: Browser, check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + browser.timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {browser.timeout} s")
        time.sleep(0.05)


def canvas_data(browser: Browser, name: str) -> str:
    return browser.driver.find_element(By.CSS_SELECTOR, ".stage canvas").get_attribute(
        f"data-{name}") or ""


def test_the_viewer_scrolls_a_series_with_window_zoom_and_prefetch(
        browser: Browser, console: Console) -> None:
    log_in(browser, console, "ops")
    browser.open(f"{console.url}/console/#/viewer/{console.ct.study_instance_uid}")
    browser.wait_for(".stage canvas")
    wait_until(browser, lambda: drawn(browser) >= 1, "the first image")
    assert canvas_data(browser, "frames") == "12"
    wait_until(browser, lambda: canvas_data(browser, "loaded") == "12", "prefetching the series")
    thumbs = browser.driver.find_elements(By.CSS_SELECTOR, "aside img")
    wait_until(browser, lambda: all((t.get_attribute("src") or "").startswith("blob:")
                                    for t in thumbs), "thumbnails")
    assert len(thumbs) == 2
    canvas = browser.driver.find_element(By.CSS_SELECTOR, ".stage canvas")
    for _ in range(3):
        canvas.send_keys(Keys.ARROW_DOWN)
    wait_until(browser, lambda: canvas_data(browser, "frame") == "3", "three steps down")
    ActionChains(browser.driver).scroll_from_origin(ScrollOrigin.from_element(canvas), 0,
                                                    120).perform()
    wait_until(browser, lambda: canvas_data(browser, "frame") == "4", "a wheel step")
    canvas.send_keys(Keys.END)
    wait_until(browser, lambda: canvas_data(browser, "frame") == "11", "the last image")
    browser.click("button[data-preset=Lung]")
    browser.wait_for_text("WL -600/1500", css=".status")
    ActionChains(browser.driver).click_and_hold(canvas).move_by_offset(20, 10).release().perform()
    browser.wait_for_text("WL -580/1580", css=".status")
    browser.click("button[data-tool=zoom-in]")
    browser.wait_for_text("125%", css=".status")
    assert_clean(browser, "viewer")
    browser.driver.find_elements(By.CSS_SELECTOR, "aside button.series")[1].click()
    wait_until(browser, lambda: canvas_data(browser, "frames") == "3", "the second series")
    assert_clean(browser, "viewer-second-series")


def test_an_mis_link_opens_its_study_without_a_login_and_expired_links_say_so(
        browser: Browser, console: Console, settings: Settings) -> None:
    with console.api.client("integration") as mis:
        links = mis.get("/api/links", params={"PatientID": "MRN-UI-1"}).json()
    url = links[0]["url"]
    assert url.startswith(settings.base_url)
    browser.open(url.replace(settings.base_url, console.url))
    wait_until(browser, lambda: bool(browser.driver.find_elements(By.CSS_SELECTOR, ".stage canvas"))
               and drawn(browser) >= 1, "the linked study's first image")
    browser.wait_for_text("MRN-UI-1", css=".banner")
    assert "brl_" not in browser.driver.current_url  # the token left the address bar
    assert_clean(browser, "mis-link")
    secret = console_secret(settings)
    for name, token in (
            ("expired", sign_link(secret, console.ct.study_instance_uid, int(time.time()) - 5)),
            ("altered", url.split("#")[1][:-2] + "xx")):
        browser.open(f"{console.url}/console/view#{token}")
        browser.wait_for_text("This link does not open a study", css="main")
        assert ("expired" if name == "expired" else "not valid") in browser.text("main")
        assert "MRN-UI-1" not in browser.text("body")
        expect_only_refusals(browser, 401)
        assert browser.axe_violations() == []
        browser.screenshot(f"mis-link-{name}")


def test_a_referral_goes_from_the_inbox_to_its_result(
        browser: Browser, console: Console) -> None:
    clinics = log_in_everyone(console.url)
    try:
        made = clinics["gp"].post("/api/referrals", json={
            "patient": {"patient_id": "MRN-UI-1", "issuer": ""}, "performer_kind": "consultant",
            "owner": "cardio", "code_display": "Cardiology opinion", "reason": "murmur",
            "studies": [console.ct.study_instance_uid]})
        assert made.status_code == 201, made.text
        referral = made.json()["id"]
    finally:
        clinics.close()
    log_in(browser, console, "cardio")
    visit(browser, console, "referrals", "#inbox table")
    browser.click("#inbox a")
    browser.wait_for("#referral-detail button[data-move=accepted]")
    assert browser.driver.find_elements(By.CSS_SELECTOR, "#referral-detail a[href^='#/viewer/']")
    browser.click("button[data-move=accepted]")
    browser.wait_for_text(f"Referral {referral}: accepted", css="#referral-message")
    browser.wait_for("#referral-detail button[data-move=in-progress]")
    browser.click("button[data-move=in-progress]")
    browser.wait_for_text("in-progress", css="#referral-detail")  # drawn again, with the form
    browser.wait_for("#report-form")
    browser.click("#report-form button")  # empty: refused on the page, nothing sent
    browser.wait_for_text("Write the conclusion", css="#referral-problem")
    browser.type("#f-conclusion", "No pathology of the heart.")
    browser.click("#report-form button")
    browser.wait_for_text("was sent to the referrer", css="#referral-message")
    browser.wait_for_text("completed", css="#referral-detail")
    assert_clean(browser, "referral-consultant")
    browser.click("#logout")
    browser.wait_for("#username")
    log_in(browser, console, "gp")
    visit(browser, console, "referrals", "#outbox table")
    browser.wait_for_text("completed", css="#outbox")
    browser.click("#outbox a")
    browser.wait_for_text("Result: DiagnosticReport/", css="#referral-detail")
    assert_clean(browser, "referral-gp-result")

    # The referrer shares the study with a colleague: an unknown name is refused, nothing made.
    visit(browser, console, f"studies/{console.ct.study_instance_uid}", "#share-form")
    browser.type("#share-form input[name=user]", "nobody-here")
    browser.click("#share-form button")
    refusal = browser.wait_for("#study-detail [role=alert]").text
    assert "user" in refusal, refusal
    expect_only_refusals(browser, 404)
    assert _shares(console) == []
    browser.type("#share-form input[name=user]", "gp2")
    browser.click("#share-form button")
    browser.wait_for_text("Shared with gp2", css="#study-detail")
    assert len(_shares(console)) == 1

"""MPPS SCP over real sockets (pynetdicom client): N-CREATE and N-SET move the worklist."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.store.models import Order, PerformedProcedureStep, ProcedureStep
from tests.dicom_harness import dicom_servers
from tests.worklist_factories import schedule

pytestmark = pytest.mark.integration

MPPS = ModalityPerformedProcedureStep


@pytest.fixture
def assoc(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Association]:
    with dicom_servers(settings, session_factory) as start:
        ae = AE(ae_title="CT1")
        ae.add_requested_context(MPPS)
        ae.add_requested_context(ModalityWorklistInformationFind)
        association = ae.associate("127.0.0.1", start().port, ae_title="BRIDGE")
        assert association.is_established
        yield association
        association.release()


@pytest.fixture
def step_id(session_factory: sessionmaker[Session]) -> int:
    with session_factory.begin() as s:
        return schedule(s, order={"accession": "ACCMPPS"}, sps_id="SPS1").id


def creation(status: str = "IN PROGRESS", accession: str = "ACCMPPS") -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.AccessionNumber = accession
    item.ScheduledProcedureStepID = "SPS1"
    item.StudyInstanceUID = ""
    ds.ScheduledStepAttributesSequence = [item]
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20261122"
    ds.PerformedProcedureStepStartTime = "091000"
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    return ds


def change(status: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261122"
    ds.PerformedProcedureStepEndTime = "093000"
    return ds


def statuses(session_factory: sessionmaker[Session], step_id: int) -> tuple[str, str]:
    with session_factory() as s:
        step = s.get(ProcedureStep, step_id)
        assert step is not None
        order = s.get(Order, step.order_id)
        assert order is not None
        return step.status, order.status


def create(assoc: Association, ds: Dataset, uid: str) -> int:
    status, _ = assoc.send_n_create(ds, MPPS, uid)
    return int(status.Status)


def set_(assoc: Association, ds: Dataset, uid: str) -> Dataset:
    status, _ = assoc.send_n_set(ds, MPPS, uid)
    return status


def offered(assoc: Association) -> list[str]:
    query = Dataset()
    query.AccessionNumber = "ACCMPPS"
    return [str(ds.AccessionNumber)
            for status, ds in assoc.send_c_find(query, ModalityWorklistInformationFind)
            if status.Status == 0xFF00 and ds is not None]


def test_in_progress_then_completed(assoc: Association, step_id: int,
                                    session_factory: sessionmaker[Session]) -> None:
    uid = generate_uid()
    assert create(assoc, creation(), uid) == 0x0000
    assert statuses(session_factory, step_id) == ("STARTED", "STARTED")
    assert offered(assoc) == ["ACCMPPS"]

    assert set_(assoc, change("COMPLETED"), uid).Status == 0x0000
    assert statuses(session_factory, step_id) == ("COMPLETED", "COMPLETED")
    assert offered(assoc) == []
    with session_factory() as s:
        mpps = s.scalar(select(PerformedProcedureStep).filter_by(sop_instance_uid=uid))
        assert mpps is not None and mpps.step_id == step_id and mpps.calling_ae == "CT1"
        attributes: dict[str, Any] = mpps.attributes
        assert attributes["00400252"]["Value"] == ["COMPLETED"]
        assert attributes["00400250"]["Value"] == ["20261122"]  # merged N-SET
        assert attributes["00400253"]["Value"] == ["PPS1"]  # kept from N-CREATE

    late = set_(assoc, change("DISCONTINUED"), uid)
    assert late.Status == 0x0110
    assert "A710" in late.ErrorComment


def test_discontinued(assoc: Association, step_id: int,
                      session_factory: sessionmaker[Session]) -> None:
    uid = generate_uid()
    assert create(assoc, creation(), uid) == 0x0000
    assert set_(assoc, change("DISCONTINUED"), uid).Status == 0x0000
    assert statuses(session_factory, step_id) == ("DISCONTINUED", "DISCONTINUED")
    assert offered(assoc) == []


@pytest.mark.usefixtures("step_id")
def test_errors(assoc: Association) -> None:
    uid = generate_uid()
    assert set_(assoc, change("COMPLETED"), uid).Status == 0x0112
    assert create(assoc, creation(status="COMPLETED"), uid) == 0x0106
    assert create(assoc, creation(), uid) == 0x0000
    assert create(assoc, creation(), uid) == 0x0111
    assert set_(assoc, change("FINISHED"), uid).Status == 0x0106


def test_unscheduled_mpps_is_kept(assoc: Association,
                                  session_factory: sessionmaker[Session]) -> None:
    uid = generate_uid()
    assert create(assoc, creation(accession="UNKNOWN"), uid) == 0x0000
    with session_factory() as s:
        mpps = s.scalar(select(PerformedProcedureStep).filter_by(sop_instance_uid=uid))
        assert mpps is not None and mpps.step_id is None

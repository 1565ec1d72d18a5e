"""HL7 → domain mapping on the fixtures, through the tables in mappings/hl7v2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.settings import PROJECT_ROOT
from bridge.domain import OrderAction, StepStatus
from bridge.errors import MappingFailed, Rejected
from bridge.mapping.hl7 import to_domain
from bridge.mapping.hl7.message import HL7Message
from bridge.mapping.hl7.tables import HL7Tables, load_hl7_tables
from bridge.mapping.tables import TableError
from tests.unit.test_hl7_message import message


@pytest.fixture(scope="module")
def tables() -> HL7Tables:
    return load_hl7_tables(PROJECT_ROOT / "mappings")


def test_order_fields(tables: HL7Tables) -> None:
    cmd = to_domain.order_command(message("orm_o01_nw.hl7"), tables)
    assert cmd.action is OrderAction.NEW
    assert cmd.step_status is StepStatus.SCHEDULED
    order = cmd.order
    assert (order.placer_number, order.placer_issuer) == ("PLC1001", "MIS")
    assert order.accession == "ACC1001"
    assert order.requested_procedure_id == "RP1001"
    assert order.priority == "STAT"
    assert order.reason == "Підозра на інсульт"
    assert order.study_instance_uid == "1.2.826.0.1.3680043.10.1137.1.1001"
    assert order.requesting_physician == "Бондаренко^Олег^Миколайович"
    assert order.referring_physician == "Мельник^Наталія^Василівна"
    assert order.admission_id == "V10001"
    [step] = order.steps
    assert (step.sps_id, step.modality, step.start_date, step.start_time) == (
        "SPS1001", "CT", "20261122", "100000")
    assert step.station_ae == "CT_SCANNER_1"  # from stations.yaml by modality


def test_patient_identifiers_keep_every_authority(tables: HL7Tables) -> None:
    patient = to_domain.patient_data(message("adt_a01_utf8.hl7"), tables)
    assert [(i.value, i.issuer, i.id_type) for i in patient.identifiers] == [
        ("P10001", "KYIV_CITY_HOSP_1", "MR"),
        ("1234567890", "UA_ESOZ", "NI"),
        ("АА123456", "UA_PASSPORT", "PPN"),
    ]
    assert patient.name == "Ґалаґан^Олена^Петрівна"
    assert (patient.birth_date, patient.sex) == ("19850314", "F")


def test_primary_authority_setting_reorders(tables: HL7Tables) -> None:
    patient = to_domain.patient_data(message("adt_a01_utf8.hl7"), tables, "UA_ESOZ")
    assert patient.primary.value == "1234567890"


def test_omi_has_one_step_per_ipc(tables: HL7Tables) -> None:
    cmd = to_domain.order_command(message("omi_o23_three_ipc.hl7"), tables)
    assert [(s.sps_id, s.modality, s.station_ae) for s in cmd.order.steps] == [
        ("SPS2001", "CT", "CT_SCANNER_1"),
        ("SPS2002", "CT", "CT_SCANNER_1"),
        ("SPS2003", "MR", "MR_SCANNER_1"),
    ]
    assert len({s.protocol_codes[0].code for s in cmd.order.steps if s.protocol_codes}) == 3


@pytest.mark.parametrize(("name", "action", "status"), [
    ("orm_o01_xo.hl7", OrderAction.CHANGE, StepStatus.SCHEDULED),
    ("orm_o01_ca.hl7", OrderAction.CANCEL, StepStatus.CANCELED),
    ("orm_o01_dc.hl7", OrderAction.DISCONTINUE, StepStatus.DISCONTINUED),
    ("orm_o01_sc_cm.hl7", OrderAction.STATUS, StepStatus.COMPLETED),
])
def test_order_control_table(tables: HL7Tables, name: str, action: OrderAction,
                             status: StepStatus) -> None:
    cmd = to_domain.order_command(message(name), tables)
    assert (cmd.action, cmd.step_status) == (action, status)


def test_minimal_order_without_optional_segments(tables: HL7Tables) -> None:
    cmd = to_domain.order_command(message("orm_o01_nw_minimal.hl7"), tables)
    assert cmd.order.accession is None
    assert cmd.order.study_instance_uid is None
    assert cmd.order.steps[0].modality == "MR"
    assert cmd.order.steps[0].start_date is not None  # falls back to OBR-7


@pytest.mark.parametrize(("name", "location", "code"), [
    ("bad_missing_pid3.hl7", "PID-3", "101"),
    ("bad_unmapped_orc.hl7", "ORC-1", "103"),
    ("bad_missing_obr.hl7", "OBR", "100"),
])
def test_bad_orders_name_the_field(tables: HL7Tables, name: str, location: str,
                                   code: str) -> None:
    with pytest.raises(MappingFailed) as caught:
        to_domain.order_command(message(name), tables)
    assert (caught.value.location, caught.value.hl7_code) == (location, code)


def test_unknown_message_type_is_rejected(tables: HL7Tables) -> None:
    with pytest.raises(Rejected) as caught:
        to_domain.classify(message("bad_unknown_type.hl7"), tables)
    assert caught.value.location == "MSH-9"


def test_unsupported_version_is_rejected(tables: HL7Tables) -> None:
    msg = HL7Message("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|9.9\rPID|1||X1", "utf-8")
    with pytest.raises(Rejected) as caught:
        to_domain.classify(msg, tables)
    assert (caught.value.location, caught.value.hl7_code) == ("MSH-12", "203")


def test_merge_and_change_identifier(tables: HL7Tables) -> None:
    merge = to_domain.patient_command(message("adt_a40_merge.hl7"), tables, "merge")
    assert merge.prior is not None and merge.prior.value == "P10003"
    assert merge.patient.primary.value == "P10001"
    change = to_domain.patient_command(message("adt_a47_change_id.hl7"), tables,
                                       "change_identifier")
    assert change.prior is not None and change.prior.value == "P10002"
    assert change.patient.primary.value == "P20002"


@pytest.mark.parametrize(("ts", "expected"), [
    ("20261122100000", ("20261122", "100000")),
    ("202611221000", ("20261122", "100000")),
    ("20261122", ("20261122", None)),
    ("20261122100000.123+0200", ("20261122", "100000")),
    ("2026", (None, None)),
])
def test_split_timestamp(ts: str, expected: tuple[str | None, str | None]) -> None:
    assert to_domain.split_timestamp(ts) == expected


def test_bad_table_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "hl7v2").mkdir()
    for name in ("messages", "fields", "priority", "stations"):
        src = PROJECT_ROOT / "mappings" / "hl7v2" / f"{name}.yaml"
        (tmp_path / "hl7v2" / f"{name}.yaml").write_text(src.read_text("utf-8"), "utf-8")
    (tmp_path / "hl7v2" / "order_status.yaml").write_text("NW_SC: SCHEDULD\n", "utf-8")
    with pytest.raises(TableError, match=r"order_status\.yaml: NW_SC"):
        load_hl7_tables(tmp_path)

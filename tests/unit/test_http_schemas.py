"""Request validation of the HTTP API (pure: no server, no database)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.adapters.http.api.schemas import OrderCreate, OrderUpdate, StepIn


def _order(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "patient": {"identifiers": [{"value": "P1"}]},
        "accession": "ACC1",
        "steps": [{"station_ae": "CT1", "modality": "CT", "start_date": "20261122",
                   "start_time": "100000"}],
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(("field", "value"), [
    ("start_date", "20261122"), ("start_date", "20240229"), ("start_date", ""),
    ("start_time", "000000"), ("start_time", "235959"),
    ("station_ae", "A" * 16), ("station_ae", "CT SCANNER"),
    ("modality", "CT"), ("modality", "OT_2"),
])
def test_valid_step_values(field: str, value: str) -> None:
    assert getattr(StepIn.model_validate({field: value}), field) == value


@pytest.mark.parametrize(("field", "value"), [
    ("start_date", "2026-11-22"), ("start_date", "20230229"), ("start_date", "2026112"),
    ("start_time", "1000"), ("start_time", "240000"), ("start_time", "106000"),
    ("station_ae", "A" * 17), ("station_ae", " CT"), ("station_ae", "КТ"),
    ("station_ae", "CT\\1"), ("modality", "ct"), ("modality", "C-T"), ("modality", "X" * 17),
    ("sps_id", "S" * 17), ("description", "line\nbreak"),
])
def test_invalid_step_values(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        StepIn.model_validate({field: value})
    assert raised.value.errors()[0]["loc"] == (field,)


def test_order_needs_a_key_and_a_step() -> None:
    assert OrderCreate.model_validate(_order()).accession == "ACC1"
    with pytest.raises(ValidationError, match="placer_number, accession or filler_number"):
        OrderCreate.model_validate(_order(accession=None))
    with pytest.raises(ValidationError):
        OrderCreate.model_validate(_order(steps=[]))
    with pytest.raises(ValidationError):
        OrderCreate.model_validate(_order(status="COMPLETED"))


def test_update_cannot_change_order_keys() -> None:
    assert OrderUpdate.model_validate({}).steps is None
    with pytest.raises(ValidationError):
        OrderUpdate.model_validate({"placer_number": "X"})
    with pytest.raises(ValidationError):
        OrderUpdate.model_validate({"patient": {"identifiers": [{"value": "P2"}]}})


def test_step_to_domain_keeps_none_and_empty_apart() -> None:
    step = StepIn.model_validate({"station_ae": "", "protocol_codes": [{"code": "X"}]})
    data = step.to_domain()
    assert data.station_ae == "" and data.modality is None
    assert data.protocol_codes is not None and data.protocol_codes[0].code == "X"

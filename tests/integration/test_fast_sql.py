"""The hot path's DB-API statements behave as SQLAlchemy's would, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from bridge.store.fast_sql import FastInsert, FastQuery, FastUpdate, fetch_all, pipelined
from bridge.store.models import (
    Order,
    Patient,
    PatientIdentifier,
    ProcedureStep,
    table_of,
    utcnow,
)

P, PI, S = table_of(Patient), table_of(PatientIdentifier), table_of(ProcedureStep)
O = table_of(Order)  # noqa: E741 - the table, as in SQL
_PATIENTS = FastInsert(P, ["id", "name", "name_search", "created_at", "updated_at"])
_CLAIM = FastInsert(PI, ["patient_id", "value", "issuer", "id_type", "position"],
                    returning=("value", "issuer"), on_conflict_do_nothing=True)
_BY_VALUE = FastQuery("SELECT value, issuer, patient_id FROM patient_identifiers "
                      "WHERE value IN :values AND issuer = :issuer ORDER BY value", [None] * 3)


def _claim(n: int, value: str, patient_id: int = 1) -> dict[str, object]:
    return {"patient_id": patient_id, "value": value, "issuer": "H", "id_type": "MR",
            "position": n}


def test_lists_of_any_length_returning_and_conflicts(engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        _PATIENTS.execute(conn, [{"id": i, "name": f"P{i}", "name_search": f"p{i}",
                                  "created_at": now, "updated_at": now} for i in (1, 2)])
        with pipelined(conn):
            won = _CLAIM.execute(conn, [_claim(0, "A"), _claim(1, "B")])
            sent = _BY_VALUE.send(conn, values=["A", "B", "C"], issuer="H")
        assert sorted(fetch_all(conn, won)) == [("A", "H"), ("B", "H")]
        # Sent before the claims inside one pipeline, so it sees them (statement order).
        assert _BY_VALUE.rows(conn, sent) == [("A", "H", 1), ("B", "H", 1)]
        # A value held already is not claimed again, and not reported as won.
        again = _CLAIM.execute(conn, [_claim(2, "B", 2), _claim(3, "C", 2)])
        assert fetch_all(conn, again) == [("C", "H")]
        for values in (["A"], ["A", "B", "C"], []):
            found = _BY_VALUE.all(conn, values=values, issuer="H")
            assert [row[0] for row in found] == values
        stored = conn.execute(select(PI.c.value, PI.c.patient_id).order_by(PI.c.value)).all()
        assert [tuple(r) for r in stored] == [("A", 1), ("B", 1), ("C", 2)]


def test_values_convert_as_sqlalchemy_does(engine: Engine) -> None:
    """JSON and times written here read back through SQLAlchemy, and the other way round."""
    now = utcnow()
    steps = FastInsert(S, ["order_id", "sps_id", "protocol_codes", "status", "updated_at"])
    read = FastQuery("SELECT id, protocol_codes FROM procedure_steps WHERE sps_id IN :ids",
                     [None, S.c.protocol_codes])
    update = FastUpdate(S, ["protocol_codes", "updated_at"])
    codes = [{"code": "CT1", "scheme": "LOCAL", "meaning": "КТ голови"}]
    with engine.begin() as conn:
        _PATIENTS.execute(conn, [{"id": 1, "name": "P", "name_search": "p", "created_at": now,
                                  "updated_at": now}])
        conn.execute(insert(O).values(id=99, patient_id=1, placer_issuer="", filler_issuer="",
                                      status="SCHEDULED", source="hl7", created_at=now,
                                      updated_at=now))
        steps.execute(conn, [{"order_id": 99, "sps_id": "S1", "protocol_codes": codes,
                              "status": "SCHEDULED", "updated_at": now}])
        [(step_id, got)] = read.all(conn, ids=["S1"])
        assert got == codes
        update.execute(conn, [{"id": step_id, "protocol_codes": [], "updated_at": now}])
        row = conn.execute(select(S.c.protocol_codes, S.c.updated_at)).one()
        assert row.protocol_codes == []
        assert row.updated_at.replace(tzinfo=None) == now.replace(tzinfo=None)


def test_rows_sharing_and_alternating_timestamps_keep_their_own(engine: Engine) -> None:
    """Timestamps are written out once per distinct object in a row (the last one is
    remembered): alternating, repeated and equal-but-distinct values all come back right."""
    first = utcnow().replace(microsecond=1)
    second = first + timedelta(seconds=1)
    stamps = [first, first, second, first, second, second, first.replace(microsecond=1)]
    with engine.begin() as conn:
        _PATIENTS.execute(conn, [{"id": i + 1, "name": "P", "name_search": "p",
                                  "created_at": stamp, "updated_at": second}
                                 for i, stamp in enumerate(stamps)])
        got = conn.execute(select(P.c.created_at, P.c.updated_at).order_by(P.c.id)).all()
    assert [row.created_at.replace(tzinfo=None) for row in got] == [
        stamp.replace(tzinfo=None) for stamp in stamps]
    assert {row.updated_at.replace(tzinfo=None) for row in got} == {second.replace(tzinfo=None)}


def test_driver_errors_come_back_as_sqlalchemy_errors(engine: Engine) -> None:
    now = utcnow()
    row = {"id": 7, "name": "X", "name_search": "x", "created_at": now, "updated_at": now}
    with engine.connect() as conn, conn.begin():
        _PATIENTS.execute(conn, [row])
        with pytest.raises(IntegrityError), pipelined(conn):
            _PATIENTS.execute(conn, [row])

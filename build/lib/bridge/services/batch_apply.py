"""Apply a run of patient upserts and new/changed orders with a handful of statements.

The per-message path (:mod:`bridge.services.orders`, :mod:`bridge.services.patients`) costs
four to seven round trips per message. Under load, HL7 arrives in batches (group commit), so
this module reads everything a batch needs in three queries, applies the same rules
(:mod:`bridge.mapping.order_rules`) to in-memory state in message order, and writes the
result with one statement per table and kind. The outcome is the same as applying the
messages one by one; ``tests/integration/test_batch_apply.py`` checks that.

Only the common commands come here (ADT upserts, NW/XO orders with a placer number or an
accession); merges, identifier changes, cancels and status updates take the per-message
path. A concurrent writer claiming a new patient's identifier first raises
:class:`ClaimLost`, and the caller re-runs the batch one message at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from bridge.domain import Identifier, OrderAction, OrderCommand, PatientCommand, PatientData
from bridge.mapping import order_rules as rules
from bridge.mapping.patient_rules import demographic_changes
from bridge.services.orders import OrderPolicy, check_creatable, new_order_values
from bridge.services.patients import lookup_identifier
from bridge.store.fast_insert import FastInsert
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
OWNED = PI.alias("owned")
IdKey = tuple[str, str]

_INSERT_PATIENTS = FastInsert(P, [c.name for c in P.columns])
_CLAIM = {
    "sqlite": sqlite.insert(PI).on_conflict_do_nothing().returning(PI.c.value, PI.c.issuer),
    "postgresql": postgresql.insert(PI).on_conflict_do_nothing().returning(
        PI.c.value, PI.c.issuer),
}
_UPDATE_PATIENT = update(P).where(P.c.id == bindparam("b_id")).values(
    name=bindparam("name"), name_search=bindparam("name_search"),
    birth_date=bindparam("birth_date"), sex=bindparam("sex"), updated_at=bindparam("b_now"))
#: Columns only the FHIR intake fills (ServiceRequest.note, authoredOn); HL7 rows leave them
#: NULL, so the bulk insert does not name them.
_FHIR_ONLY_ORDER_COLUMNS = frozenset({"comments", "issue_date", "issue_time"})
_INSERT_ORDERS = FastInsert(O, [c.name for c in O.columns
                                if c.name not in _FHIR_ONLY_ORDER_COLUMNS])
_INSERT_STEPS = FastInsert(S, [c.name for c in S.columns if c.name != "id"])
_ORDER_COLUMNS = (*rules.ORDER_FIELDS, "placer_issuer", "filler_issuer", "procedure_code",
                  "procedure_scheme", "procedure_meaning", "patient_id", "status")
_UPDATE_ORDER = update(O).where(O.c.id == bindparam("b_id")).values(
    {name: bindparam(name) for name in _ORDER_COLUMNS} | {"updated_at": bindparam("b_now")})
_STEP_COLUMNS = (*rules.STEP_FIELDS, "protocol_codes", "status")
_UPDATE_STEP = update(S).where(S.c.id == bindparam("b_id")).values(
    {name: bindparam(name) for name in _STEP_COLUMNS} | {"updated_at": bindparam("b_now")})


# Statements are built once: building one (and its cache key) costs more than SQLite
# takes to run it.
_PATIENTS_BY_VALUE = (
    select(PI.c.value, PI.c.issuer, P.c.id, P.c.merged_into_id, P.c.name, P.c.birth_date,
           P.c.sex, OWNED.c.value.label("owned_value"), OWNED.c.issuer.label("owned_issuer"))
    .join(P, P.c.id == PI.c.patient_id)
    .join(OWNED, OWNED.c.patient_id == P.c.id)
    .where(PI.c.value.in_(bindparam("values", expanding=True)))  # an index seek on value
)
_PATIENTS_BY_ID = select(P.c.id, P.c.name, P.c.birth_date, P.c.sex).where(
    P.c.id.in_(bindparam("ids", expanding=True)))
_ORDERS_BY_KEYS = select(O).where(or_(
    O.c.placer_number.in_(bindparam("placers", expanding=True)),
    O.c.accession.in_(bindparam("accessions", expanding=True))))
_STEPS_OF = select(S).where(S.c.order_id.in_(bindparam("ids", expanding=True)))
_MAX_ID = {table.name: select(func.coalesce(func.max(table.c.id), 0)) for table in (P, O)}
_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) "
                 "FROM generate_series(1, :n)")


def allocate_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """Primary keys for ``count`` new rows, so that one executemany can insert them all
    (INSERT ... RETURNING in parameter order makes SQLAlchemy insert SQLite rows one by one).

    SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE), so nobody
    else can take max(id) + 1 before we commit. PostgreSQL: the table's own sequence.
    """
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_NEXT_IDS, {"t": table.name, "n": count})
        return [int(r[0]) for r in rows]
    top = conn.execute(_MAX_ID[table.name]).scalar_one()
    return list(range(int(top) + 1, int(top) + 1 + count))


class ClaimLost(Exception):
    """Another writer took a new patient's identifier during this batch."""


def eligible(command: PatientCommand | OrderCommand) -> bool:
    if isinstance(command, PatientCommand):
        return command.kind == "upsert" and bool(command.patient.identifiers)
    # A filler number may name the order on its own: the per-message path looks it up.
    return (command.action in (OrderAction.NEW, OrderAction.CHANGE)
            and bool(command.order.placer_number or command.order.accession)
            and not command.order.filler_number
            and bool(command.patient.identifiers))


@dataclass(eq=False)
class _Patient:
    id: int | None
    name: str
    birth_date: str | None
    sex: str | None
    identifiers: set[IdKey]
    primary: Identifier | None = None  # set for a new patient
    dirty: bool = False
    pending: list[tuple[Identifier, int]] = field(default_factory=list)


@dataclass(eq=False)
class _Step:
    id: int | None
    values: dict[str, Any]
    dirty: bool = False


@dataclass(eq=False)
class _Order:
    id: int | None
    values: dict[str, Any]
    patient: _Patient
    steps: dict[str, _Step]
    source: str = "hl7"
    dirty: bool = False


class BatchApplier:
    """Applies one run of eligible commands inside the caller's transaction."""

    def __init__(self, conn: Connection, policy: OrderPolicy) -> None:
        self._conn = conn
        self._policy = policy
        self._owners: dict[IdKey, _Patient] = {}
        self._by_placer: dict[IdKey, _Order] = {}
        self._by_accession: dict[str, _Order] = {}
        self._patients: list[_Patient] = []
        self._orders: list[_Order] = []

    def apply(self, commands: list[PatientCommand | OrderCommand]) -> list[Exception | None]:
        """Apply in order; returns per command None or the BridgeError it was refused with."""
        self._prefetch(commands)
        results: list[Exception | None] = []
        for command in commands:
            try:
                if isinstance(command, PatientCommand):
                    self._upsert_patient(command.patient)
                else:
                    self._apply_order(command)
                results.append(None)
            except Exception as exc:  # BridgeError kinds; no state was touched before raising
                results.append(exc)
        self._flush()
        return results

    # -- reading ----------------------------------------------------------------------------
    def _prefetch(self, commands: list[PatientCommand | OrderCommand]) -> None:
        keys: set[IdKey] = set()
        placers: set[IdKey] = set()
        accessions: set[str] = set()
        for command in commands:
            keys.update((i.value, i.issuer) for i in command.patient.identifiers)
            if isinstance(command, OrderCommand):
                if command.order.placer_number:
                    placers.add((command.order.placer_number, command.order.placer_issuer))
                if command.order.accession:
                    accessions.add(command.order.accession)
        self._load_patients(keys)
        self._load_orders(placers, accessions)

    def _load_patients(self, keys: set[IdKey]) -> None:
        if not keys:
            return
        rows = self._conn.execute(_PATIENTS_BY_VALUE,
                                  {"values": sorted({value for value, _ in keys})}).all()
        by_id: dict[int, _Patient] = {}
        for row in rows:
            key = (row.value, row.issuer)
            if key not in keys:
                continue
            if row.merged_into_id is not None:
                if key not in self._owners:  # the survivor, as the per-message path finds it
                    found = lookup_identifier(self._conn, Identifier(*key))
                    assert found is not None
                    survivor = by_id.get(found.id)
                    if survivor is None:
                        survivor = by_id[found.id] = _Patient(
                            found.id, found.name, found.birth_date, found.sex,
                            set(found.identifiers))
                    self._owners[key] = survivor
                continue
            state = by_id.get(row.id)
            if state is None:
                state = by_id[row.id] = _Patient(row.id, row.name, row.birth_date, row.sex,
                                                 set())
            state.identifiers.add((row.owned_value, row.owned_issuer))
            self._owners[key] = state

    def _load_orders(self, placers: set[IdKey], accessions: set[str]) -> None:
        if not placers and not accessions:
            return
        # Seeks on the leading index columns; issuers are checked below. An empty list
        # matches nothing.
        found = self._conn.execute(_ORDERS_BY_KEYS, {
            "placers": sorted({number for number, _ in placers}),
            "accessions": sorted(accessions)})
        rows = [row for row in found
                if (row.placer_number, row.placer_issuer) in placers
                or row.accession in accessions]
        if not rows:
            return
        patient_ids = {row.patient_id for row in rows}
        known = {state.id: state for state in self._owners.values()}
        missing = patient_ids - set(known)
        if missing:  # orders of patients not named in the batch (the order moves away)
            for row in self._conn.execute(_PATIENTS_BY_ID, {"ids": sorted(missing)}):
                known[row.id] = _Patient(row.id, row.name, row.birth_date, row.sex, set())
        steps: dict[int, dict[str, _Step]] = {row.id: {} for row in rows}
        for step in self._conn.execute(_STEPS_OF, {"ids": list(steps)}):
            values = {name: getattr(step, name) for name in (*_STEP_COLUMNS, "sps_id")}
            steps[step.order_id][step.sps_id] = _Step(step.id, values)
        for row in rows:
            state = _Order(row.id, dict(row._mapping), known[row.patient_id], steps[row.id])
            if row.placer_number:
                self._by_placer.setdefault((row.placer_number, row.placer_issuer), state)
            if row.accession:
                self._by_accession.setdefault(row.accession, state)

    # -- applying ---------------------------------------------------------------------------
    def _upsert_patient(self, data: PatientData) -> _Patient:
        primary = data.primary
        state = self._owners.get((primary.value, primary.issuer))
        if state is None:
            state = _Patient(None, data.name or "", data.birth_date or None, data.sex or None,
                             set(), primary=primary)
            self._claim(state, primary, 0)
            self._patients.append(state)
        else:
            changes = demographic_changes(state.name, state.birth_date, state.sex, data)
            if changes:
                state.name = changes.get("name", state.name) or ""
                state.birth_date = changes.get("birth_date", state.birth_date)
                state.sex = changes.get("sex", state.sex)
                state.dirty = True
            if state.dirty and state not in self._patients:
                self._patients.append(state)
        position = max(len(state.identifiers), 1)
        for identifier in data.identifiers[1:]:
            key = (identifier.value, identifier.issuer)
            if key in state.identifiers or key in self._owners:
                continue  # held already, or another patient's: the primary ID decides
            self._claim(state, identifier, position)
            position += 1
            if state not in self._patients:
                self._patients.append(state)
        return state

    def _claim(self, state: _Patient, identifier: Identifier, position: int) -> None:
        key = (identifier.value, identifier.issuer)
        state.identifiers.add(key)
        state.pending.append((identifier, position))
        self._owners[key] = state

    def _find(self, command: OrderCommand) -> _Order | None:
        data = command.order
        if data.placer_number:
            found = self._by_placer.get((data.placer_number, data.placer_issuer))
            if found is not None:
                return found
        return self._by_accession.get(data.accession) if data.accession else None

    def _apply_order(self, command: OrderCommand) -> None:
        data, status = command.order, command.step_status
        order = self._find(command)
        if order is None:
            check_creatable(data, self._policy)  # before any state changes
            patient = self._upsert_patient(command.patient)
            values = new_order_values(data, self._policy)
            values.update(source=command.source, status=status.value)
            order = _Order(None, values, patient, {}, dirty=True)
            base = values.get("requested_procedure_id") or values.get("accession") or ""
            for n, step in enumerate(data.steps, start=1):
                # A missing base (no accession yet) is filled in at flush time.
                sps_id = step.sps_id or (rules.generated_sps_id(base, n, len(data.steps))
                                         if base else f"\0{n}/{len(data.steps)}")
                order.steps[sps_id] = _Step(None, rules.new_step(step, sps_id, status), True)
            self._orders.append(order)
            self._index(order)
            return
        patient = self._upsert_patient(command.patient)
        changes = rules.order_changes(order.values, data)
        if order.patient is not patient:
            order.patient = patient
            order.dirty = True
        base = (order.values.get("requested_procedure_id") or order.values.get("accession")
                or str(order.id))
        for index, step_data in enumerate(data.steps, start=1):
            sps_id = step_data.sps_id or rules.generated_sps_id(base, index, len(data.steps))
            step = rules.match_step(order.steps, step_data, sps_id, len(data.steps))
            if step is None:
                order.steps[sps_id] = _Step(None, rules.new_step(step_data, sps_id, status), True)
                continue
            step.values.update(rules.step_said(step_data))
            if not rules.keeps_status(step.values["status"], status):
                step.values["status"] = status.value
            step.dirty = True
        new_status = rules.order_status((s.values["status"] for s in order.steps.values()),
                                        order.values["status"])
        if new_status != order.values["status"]:
            changes["status"] = new_status
        if changes:
            order.values.update(changes)
            order.dirty = True
        if order not in self._orders:
            self._orders.append(order)
        self._index(order)

    def _index(self, order: _Order) -> None:
        values = order.values
        if values.get("placer_number"):
            self._by_placer.setdefault((values["placer_number"], values["placer_issuer"]),
                                       order)
        if values.get("accession"):
            self._by_accession.setdefault(values["accession"], order)

    # -- writing ----------------------------------------------------------------------------
    def _flush(self) -> None:
        conn, now = self._conn, utcnow()
        new_patients = [p for p in self._patients if p.id is None]
        if new_patients:
            for state, new_id in zip(new_patients, allocate_ids(conn, P, len(new_patients)),
                                     strict=True):
                state.id = new_id
            _INSERT_PATIENTS.execute(conn, [
                {"id": p.id, "name": p.name, "name_search": p.name.casefold(),
                 "birth_date": p.birth_date, "sex": p.sex, "merged_into_id": None,
                 "created_at": now, "updated_at": now}
                for p in new_patients])
        claims = [{"patient_id": p.id, "value": i.value, "issuer": i.issuer,
                   "id_type": i.id_type, "position": pos}
                  for p in self._patients for i, pos in p.pending]
        if claims:
            got = {(r.value, r.issuer) for r in conn.execute(_CLAIM[conn.dialect.name], claims)}
            for state in new_patients:
                assert state.primary is not None
                if (state.primary.value, state.primary.issuer) not in got:
                    raise ClaimLost(state.primary.value)
        changed = [p for p in self._patients if p.dirty and p.id is not None
                   and p not in new_patients]
        if changed:
            conn.execute(_UPDATE_PATIENT, [
                {"b_id": p.id, "name": p.name, "name_search": p.name.casefold(),
                 "birth_date": p.birth_date, "sex": p.sex, "b_now": now} for p in changed])
        self._flush_orders(now)

    def _flush_orders(self, now: Any) -> None:
        conn = self._conn
        new_orders = [o for o in self._orders if o.id is None]
        if new_orders:
            rows = []
            for order, new_id in zip(new_orders, allocate_ids(conn, O, len(new_orders)),
                                     strict=True):
                order.id = new_id
                values = order.values
                if not values.get("accession") or not values.get("requested_procedure_id"):
                    accession = values.get("accession") or rules.generated_accession(
                        self._policy.accession_prefix, order.id)
                    values["accession"] = accession
                    values["requested_procedure_id"] = (values.get("requested_procedure_id")
                                                        or accession)
                self._name_generated_steps(order)
                assert order.patient.id is not None
                rows.append({**values, "id": order.id, "patient_id": order.patient.id,
                             "created_at": now, "updated_at": now})
            _INSERT_ORDERS.execute(conn, rows)
        changed = [o for o in self._orders if o.dirty and o not in new_orders]
        if changed:
            conn.execute(_UPDATE_ORDER, [self._order_row(o, now) for o in changed])
        new_steps, changed_steps = [], []
        for order in self._orders:
            for step in order.steps.values():
                if step.id is None:
                    new_steps.append({**step.values, "order_id": order.id, "updated_at": now})
                elif step.dirty:
                    changed_steps.append({**{k: step.values[k] for k in _STEP_COLUMNS},
                                          "b_id": step.id, "b_now": now})
        if new_steps:
            _INSERT_STEPS.execute(conn, new_steps)
        if changed_steps:
            conn.execute(_UPDATE_STEP, changed_steps)

    @staticmethod
    def _name_generated_steps(order: _Order) -> None:
        base = order.values.get("requested_procedure_id") or order.values["accession"]
        for step in order.steps.values():
            sps_id = step.values["sps_id"]
            if sps_id.startswith("\0"):
                index, count = (int(n) for n in sps_id[1:].split("/"))
                step.values["sps_id"] = rules.generated_sps_id(base, index, count)

    @staticmethod
    def _order_row(order: _Order, now: Any) -> dict[str, Any]:
        row = {name: order.values.get(name) for name in _ORDER_COLUMNS}
        row.update(patient_id=order.patient.id, b_id=order.id, b_now=now)
        return row

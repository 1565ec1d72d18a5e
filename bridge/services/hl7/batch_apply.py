"""Apply a run of patient upserts and new/changed orders with a handful of statements.

The per-message path (:mod:`bridge.services.worklist.orders`,
:mod:`bridge.services.patients.mpi`) costs
four to seven round trips per message. Under load, HL7 arrives in batches (group commit), so
this module reads everything a batch needs in three queries, applies the same rules
(:mod:`bridge.mapping.worklist.order_rules`) to in-memory state in message order, and writes the
result with one statement per table and kind. The outcome is the same as applying the
messages one by one; ``tests/integration/test_batch_apply.py`` checks that.

Only the common commands come here (ADT upserts, NW/XO orders with a placer number or an
accession); merges, identifier changes, cancels and status updates take the per-message
path. A new patient's primary identifier is inserted without ``ON CONFLICT``: if a
concurrent writer claimed it first, the unique constraint fails the statement (an
``IntegrityError``, on PostgreSQL when the pipeline is read), and the caller rolls back and
re-runs the batch one message at a time. So nothing has to be read back before the commit,
and on PostgreSQL the COMMIT can travel with the writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from bridge.domain import Identifier, OrderAction, OrderCommand, PatientCommand, PatientData
from bridge.mapping.patients.rules import demographic_changes
from bridge.mapping.worklist import order_rules as rules
from bridge.services.patients.mpi import lookup_identifier
from bridge.services.worklist.orders import OrderPolicy, check_creatable, new_order_values
from bridge.store.fast_sql import FastInsert, FastQuery, FastUpdate, is_postgresql
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
IdKey = tuple[str, str]
Command = PatientCommand | OrderCommand

# Statements are written once and run on the DB-API cursor (bridge.store.fast_sql):
# building a SQLAlchemy statement per batch cost more than SQLite takes to run it.
_INSERT_PATIENTS = FastInsert(P, [c.name for c in P.columns])
_IDENTIFIER_COLUMNS = ["patient_id", "value", "issuer", "id_type", "position"]
#: A new patient's primary identifier: losing it to another writer must stop the batch.
_CLAIM_PRIMARY = FastInsert(PI, _IDENTIFIER_COLUMNS)
#: Further identifiers: one another patient holds already stays theirs.
_CLAIM = FastInsert(PI, _IDENTIFIER_COLUMNS, on_conflict_do_nothing=True)
_UPDATE_PATIENT = FastUpdate(P, ["name", "name_search", "birth_date", "sex", "updated_at"])
#: Columns only the FHIR intake fills (ServiceRequest.note, authoredOn); HL7 rows leave them
#: NULL, so the bulk insert does not name them.
_FHIR_ONLY_ORDER_COLUMNS = frozenset({"comments", "issue_date", "issue_time"})
_INSERT_ORDERS = FastInsert(O, [c.name for c in O.columns
                                if c.name not in _FHIR_ONLY_ORDER_COLUMNS])
_INSERT_STEPS = FastInsert(S, [c.name for c in S.columns if c.name != "id"])
_ORDER_COLUMNS = (*rules.ORDER_FIELDS, "placer_issuer", "filler_issuer", "procedure_code",
                  "procedure_scheme", "procedure_meaning", "patient_id", "status")
_UPDATE_ORDER = FastUpdate(O, [*_ORDER_COLUMNS, "updated_at"])
_STEP_COLUMNS = (*rules.STEP_FIELDS, "protocol_codes", "status")
_UPDATE_STEP = FastUpdate(S, [*_STEP_COLUMNS, "updated_at"])

# PostgreSQL: the look-ups are lateral joins, one index seek per value, so that the plan
# does not depend on statistics, which lag behind tables that grow under load (an IN list
# over stale statistics was planned as hash joins over whole tables).

#: Every patient holding one of the values, with all the identifiers it owns (an index
#: seek on value; issuers are checked in Python).
_PATIENT_COLUMNS = ("pi.value, pi.issuer, p.id, p.merged_into_id, p.name, p.birth_date, p.sex, "
                    "owned.value, owned.issuer")
_PATIENTS_BY_VALUE = FastQuery(f"""
    SELECT {_PATIENT_COLUMNS}
    FROM patient_identifiers pi
    JOIN patients p ON p.id = pi.patient_id
    JOIN patient_identifiers owned ON owned.patient_id = p.id
    WHERE pi.value IN :values""", [None] * 9, postgresql=f"""
    SELECT {_PATIENT_COLUMNS}
    FROM unnest(CAST(:values AS text[])) AS k(value)
    CROSS JOIN LATERAL (SELECT value, issuer, patient_id FROM patient_identifiers
                        WHERE value = k.value OFFSET 0) AS pi
    CROSS JOIN LATERAL (SELECT id, merged_into_id, name, birth_date, sex FROM patients
                        WHERE id = pi.patient_id LIMIT 1) AS p
    CROSS JOIN LATERAL (SELECT value, issuer FROM patient_identifiers
                        WHERE patient_id = p.id OFFSET 0) AS owned""")
_PATIENTS_BY_ID = FastQuery("SELECT id, name, birth_date, sex FROM patients WHERE id IN :ids",
                            [None] * 4)
#: Orders by placer number or accession with their steps, in one statement (seeks on the
#: leading index columns; issuers are checked in Python).
_ORDER_READ = ("id", *_ORDER_COLUMNS)
_STEP_READ = ("id", "sps_id", *_STEP_COLUMNS)
_ORDER_SELECT = ", ".join(_ORDER_READ)
_ORDERS_WITH_STEPS = FastQuery(
    f"SELECT {', '.join('o.' + c for c in _ORDER_READ)}, "
    f"{', '.join('s.' + c for c in _STEP_READ)} "
    "FROM orders o LEFT JOIN procedure_steps s ON s.order_id = o.id "
    "WHERE o.placer_number IN :placers OR o.accession IN :accessions",
    [None] * len(_ORDER_READ) + [S.c[name] for name in _STEP_READ], postgresql=f"""
    WITH o AS (
        SELECT o.* FROM unnest(CAST(:placers AS text[])) AS k(value)
        CROSS JOIN LATERAL (SELECT {_ORDER_SELECT} FROM orders
                            WHERE placer_number = k.value OFFSET 0) AS o
        UNION ALL
        SELECT o.* FROM unnest(CAST(:accessions AS text[])) AS k(value)
        CROSS JOIN LATERAL (SELECT {_ORDER_SELECT} FROM orders
                            WHERE accession = k.value OFFSET 0) AS o)
    SELECT {', '.join('o.' + c for c in _ORDER_READ)}, {', '.join('s.' + c for c in _STEP_READ)}
    FROM o LEFT JOIN LATERAL (SELECT {', '.join(_STEP_READ)} FROM procedure_steps
                              WHERE order_id = o.id OFFSET 0) AS s ON true""")
_MAX_IDS = FastQuery("SELECT (SELECT coalesce(max(id), 0) FROM patients), "
                     "(SELECT coalesce(max(id), 0) FROM orders)", [None, None])
_NEXT_IDS = FastQuery(
    "SELECT (SELECT array_agg(nextval(pg_get_serial_sequence('patients', 'id'))) "
    "        FROM generate_series(1, :patients)), "
    "       (SELECT array_agg(nextval(pg_get_serial_sequence('orders', 'id'))) "
    "        FROM generate_series(1, :orders))", [None, None])


def allocate_ids(conn: Connection, patients: int, orders: int) -> tuple[list[int], list[int]]:
    """Primary keys for new patients and orders, so that one statement can insert them all
    (INSERT ... RETURNING does not say which row got which key).

    SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE), so nobody
    else can take max(id) + 1 before we commit. PostgreSQL: the tables' own sequences.
    """
    if not patients and not orders:
        return [], []
    if is_postgresql(conn):
        p_ids, o_ids = _NEXT_IDS.all(conn, patients=patients, orders=orders)[0]
        return [int(i) for i in p_ids or ()], [int(i) for i in o_ids or ()]
    p_top, o_top = _MAX_IDS.all(conn)[0]
    return (list(range(int(p_top) + 1, int(p_top) + 1 + patients)),
            list(range(int(o_top) + 1, int(o_top) + 1 + orders)))


def eligible(command: object) -> bool:
    """Whether a command takes the bulk path (common ADT and order messages only)."""
    if isinstance(command, PatientCommand):
        return command.kind == "upsert" and bool(command.patient.identifiers)
    if not isinstance(command, OrderCommand):
        return False  # referrals, results: one by one
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


@dataclass(slots=True)
class Reads:
    """The batch's look-ups, sent (on PostgreSQL in one round trip) and not yet read."""

    keys: set[IdKey]
    placers: set[IdKey]
    accessions: set[str]
    patients: Any = None
    orders: Any = None
    ids: Any = None


class BatchApplier:
    """Applies one run of eligible commands inside the caller's transaction, in phases so
    that a caller can share round trips with its own statements:

    ``send_reads`` → (round trip) → ``load`` → ``apply`` (in memory) → ``write`` (whose
    errors, on PostgreSQL inside ``pipelined``, arrive at the end of the block). :meth:`run`
    does it all.
    """

    def __init__(self, conn: Connection, policy: OrderPolicy) -> None:
        self._conn = conn
        self._policy = policy
        self._owners: dict[IdKey, _Patient] = {}
        self._by_placer: dict[IdKey, _Order] = {}
        self._by_accession: dict[str, _Order] = {}
        self._patients: list[_Patient] = []
        self._orders: list[_Order] = []
        #: PostgreSQL: keys taken from the sequences with the reads (see send_reads).
        self._spare_ids: tuple[list[int], list[int]] | None = None

    def run(self, commands: list[Command]) -> list[Exception | None]:
        """Read, apply and write ``commands``; see :meth:`apply` for the result."""
        self.load(self.send_reads(commands))
        results = self.apply(commands)
        self.write()
        return results

    # -- reading ----------------------------------------------------------------------------
    def send_reads(self, commands: list[Command]) -> Reads:
        """Send the look-ups for ``commands`` (more commands than are applied is harmless:
        what is read is only state)."""
        reads = Reads(set(), set(), set())
        for command in commands:
            reads.keys.update((i.value, i.issuer) for i in command.patient.identifiers)
            if isinstance(command, OrderCommand):
                if command.order.placer_number:
                    reads.placers.add((command.order.placer_number, command.order.placer_issuer))
                if command.order.accession:
                    reads.accessions.add(command.order.accession)
        if reads.keys:
            reads.patients = _PATIENTS_BY_VALUE.send(
                self._conn, values=sorted({value for value, _ in reads.keys}))
        if reads.placers or reads.accessions:
            # An empty list matches nothing.
            reads.orders = _ORDERS_WITH_STEPS.send(
                self._conn, placers=sorted({number for number, _ in reads.placers}),
                accessions=sorted(reads.accessions))
        if is_postgresql(self._conn):
            # Keys for as many new patients and orders as the commands could create, in
            # the same round trip; those left unused are gaps in the sequences, as a
            # rolled-back transaction leaves.
            primaries = {(c.patient.primary.value, c.patient.primary.issuer)
                         for c in commands if c.patient.identifiers}
            orders = sum(isinstance(c, OrderCommand) for c in commands)
            reads.ids = _NEXT_IDS.send(self._conn, patients=len(primaries), orders=orders)
        return reads

    def load(self, reads: Reads) -> None:
        """Take in what :meth:`send_reads` found (on PostgreSQL: after its round trip)."""
        if reads.patients is not None:
            self._load_patients(reads.keys, _PATIENTS_BY_VALUE.rows(self._conn, reads.patients))
        if reads.orders is not None:
            self._load_orders(reads.placers, reads.accessions,
                              _ORDERS_WITH_STEPS.rows(self._conn, reads.orders))
        if reads.ids is not None:
            patient_ids, order_ids = _NEXT_IDS.rows(self._conn, reads.ids)[0]
            self._spare_ids = ([int(i) for i in patient_ids or ()],
                               [int(i) for i in order_ids or ()])

    def _load_patients(self, keys: set[IdKey], rows: list[tuple[Any, ...]]) -> None:
        by_id: dict[int, _Patient] = {}
        for (value, issuer, patient_id, merged_into_id, name, birth_date, sex, owned_value,
             owned_issuer) in rows:
            key = (value, issuer)
            if key not in keys:
                continue
            if merged_into_id is not None:
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
            state = by_id.get(patient_id)
            if state is None:
                state = by_id[patient_id] = _Patient(patient_id, name, birth_date, sex, set())
            state.identifiers.add((owned_value, owned_issuer))
            self._owners[key] = state

    def _load_orders(self, placers: set[IdKey], accessions: set[str],
                     found: list[tuple[Any, ...]]) -> None:
        width = len(_ORDER_READ)
        orders: dict[int, dict[str, Any]] = {}
        steps: dict[int, dict[str, _Step]] = {}
        for row in found:
            values = dict(zip(_ORDER_READ, row[:width], strict=True))
            if ((values["placer_number"], values["placer_issuer"]) not in placers
                    and values["accession"] not in accessions):
                continue
            order_id = values.pop("id")
            orders.setdefault(order_id, values)
            order_steps = steps.setdefault(order_id, {})
            step = dict(zip(_STEP_READ, row[width:], strict=True))
            step_id = step.pop("id")
            if step_id is not None:
                order_steps[step["sps_id"]] = _Step(step_id, step)
        if not orders:
            return
        known = {state.id: state for state in self._owners.values()}
        missing = {values["patient_id"] for values in orders.values()} - set(known)
        if missing:  # orders of patients not named in the batch (the order moves away)
            for patient_id, name, birth_date, sex in _PATIENTS_BY_ID.all(
                    self._conn, ids=sorted(missing)):
                known[patient_id] = _Patient(patient_id, name, birth_date, sex, set())
        # In id order, as the per-message path would meet them.
        for order_id in sorted(orders):
            values = orders[order_id]
            state = _Order(order_id, values, known[values["patient_id"]], steps[order_id])
            if values["placer_number"]:
                self._by_placer.setdefault((values["placer_number"], values["placer_issuer"]),
                                           state)
            if values["accession"]:
                self._by_accession.setdefault(values["accession"], state)

    # -- applying ---------------------------------------------------------------------------
    def apply(self, commands: list[Command]) -> list[Exception | None]:
        """Apply in order, in memory; returns per command None or the BridgeError it was
        refused with."""
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
        return results

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
    def write(self) -> None:
        """Send every write: one statement per table and kind.

        Raises ``IntegrityError`` (on PostgreSQL inside ``pipelined``: at the end of the
        block) when another writer created one of the new patients first.
        """
        conn, now = self._conn, utcnow()
        new_patients = [p for p in self._patients if p.id is None]
        new_orders = [o for o in self._orders if o.id is None]
        if self._spare_ids is not None:
            patient_ids = self._spare_ids[0][:len(new_patients)]
            order_ids = self._spare_ids[1][:len(new_orders)]
        else:
            patient_ids, order_ids = allocate_ids(conn, len(new_patients), len(new_orders))
        for state, new_id in zip(new_patients, patient_ids, strict=True):
            state.id = new_id
        for order, new_id in zip(new_orders, order_ids, strict=True):
            order.id = new_id
        _INSERT_PATIENTS.execute(conn, [
            {"id": p.id, "name": p.name, "name_search": p.name.casefold(),
             "birth_date": p.birth_date, "sex": p.sex, "merged_into_id": None,
             "created_at": now, "updated_at": now}
            for p in new_patients])
        primaries: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for state in self._patients:
            for identifier, position in state.pending:
                row = {"patient_id": state.id, "value": identifier.value,
                       "issuer": identifier.issuer, "id_type": identifier.id_type,
                       "position": position}
                # ``primary`` is set only on a patient this batch creates.
                (primaries if identifier is state.primary else others).append(row)
        _CLAIM_PRIMARY.execute(conn, primaries)
        _CLAIM.execute(conn, others)
        _UPDATE_PATIENT.execute(conn, [
            {"id": p.id, "name": p.name, "name_search": p.name.casefold(),
             "birth_date": p.birth_date, "sex": p.sex, "updated_at": now}
            for p in self._patients if p.dirty and p.id is not None and p not in new_patients])
        self._write_orders(new_orders, now)

    def _write_orders(self, new_orders: list[_Order], now: Any) -> None:
        conn = self._conn
        rows = []
        for order in new_orders:
            values = order.values
            if not values.get("accession") or not values.get("requested_procedure_id"):
                assert order.id is not None
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
        _UPDATE_ORDER.execute(conn, [self._order_row(o, now) for o in self._orders
                                     if o.dirty and o.id is not None and o not in new_orders])
        new_steps, changed_steps = [], []
        for order in self._orders:
            for step in order.steps.values():
                if step.id is None:
                    new_steps.append({**step.values, "order_id": order.id, "updated_at": now})
                elif step.dirty:
                    changed_steps.append({**{k: step.values[k] for k in _STEP_COLUMNS},
                                          "id": step.id, "updated_at": now})
        _INSERT_STEPS.execute(conn, new_steps)
        _UPDATE_STEP.execute(conn, changed_steps)

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
        row.update(patient_id=order.patient.id, id=order.id, updated_at=now)
        return row

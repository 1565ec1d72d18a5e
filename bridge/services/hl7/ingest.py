"""HL7 v2 intake: log, de-duplicate, map and apply messages, and answer each with its ACK.

Messages are handled in batches inside one database transaction (group commit): each
message gets a savepoint, so a failing one rolls back alone, and every message's log row,
effects and ACK are committed together *before* any ACK of the batch is released. A
duplicate (same MSH-3, MSH-4, MSH-10) is answered with the stored ACK and not applied again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.domain import OrderCommand, PatientCommand, ReferralCommand, ResultCommand
from bridge.errors import BridgeError, Conflict, NotFound, Rejected, Transient, answer_for
from bridge.mapping.hl7 import referrals as hl7_referrals
from bridge.mapping.hl7 import to_domain
from bridge.mapping.hl7.ack import AckContext, build_ack, wants_ack
from bridge.mapping.hl7.message import (
    HL7Message,
    RawHeader,
    choose_charset,
    decode,
    read_raw_header,
)
from bridge.mapping.hl7.tables import HL7Tables
from bridge.services.hl7 import batch_apply
from bridge.services.patients import mpi as patients
from bridge.services.referrals.hl7 import apply_referral, apply_result
from bridge.services.worklist.orders import OrderPolicy, apply_order_command
from bridge.store.fast_sql import FastInsert, FastQuery, autocommits, pipelined, send_control
from bridge.store.models import HL7Message as LogRow
from bridge.store.models import table_of

log = logging.getLogger("bridge.hl7")
LOG = table_of(LogRow)
_INSERT_LOG = FastInsert(LOG, [c.name for c in LOG.columns if c.name != "id"])
_STORED_COLUMNS = ("control_id, accept_ack, ack, status, ack_code, error, error_location, "
                   "charset")
#: An index seek on (sender, facility, control_id); a row-value IN would make SQLite scan
#: the whole log. PostgreSQL: one seek per control ID on the whole key (a lateral join).
#: Given ``control_id = ANY(...)`` while the log's statistics are stale (a log that grew
#: since the last ANALYZE, as it does under load), its planner seeks on the sender alone
#: and filters every message of that sender, so the check grew with the log.
_STORED_ACKS = FastQuery(f"""
    SELECT {_STORED_COLUMNS} FROM hl7_messages
    WHERE sending_application = :app AND sending_facility = :fac AND control_id IN :ids""",
                         [None] * 8, postgresql=f"""
    SELECT m.* FROM unnest(CAST(:ids AS text[])) AS k(id)
    CROSS JOIN LATERAL (
        SELECT {_STORED_COLUMNS} FROM hl7_messages
        WHERE sending_application = :app AND sending_facility = :fac AND control_id = k.id
        LIMIT 1) AS m""")
#: Control IDs per duplicate-check query (SQLite's bound parameter limit is far above).
_IDS_PER_QUERY = 500

MessageKey = tuple[str, str, str]


@dataclass(slots=True)
class Inbound:
    raw: bytes
    peer: str = ""
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(slots=True)
class Outcome:
    """What goes back to the sender, in order (enhanced mode: accept ACK, then app ACK)."""

    accept_ack: str | None
    app_ack: str | None
    status: str
    ack_code: str
    error: str | None = None
    error_location: str | None = None
    duplicate: bool = False
    message_id: int | None = None
    #: The codec the replies are sent in (the message's own).
    charset: str = "utf-8"

    @property
    def replies(self) -> list[str]:
        return [ack for ack in (self.accept_ack, self.app_ack) if ack]


Command = OrderCommand | PatientCommand | ReferralCommand | ResultCommand


class _NeedsIsolation(Exception):
    """A message failed in an optimistic batch: run the batch again with savepoints."""


@dataclass(slots=True)
class Prepared:
    """A message decoded and mapped, or the error that stopped it, ready to apply."""

    item: Inbound
    header: RawHeader | None
    charset: str | None = None
    message: HL7Message | None = None
    command: Command | None = None
    error: BridgeError | None = None
    #: What the ACK copies from the message (read on arrival, off the batch's path).
    ack_context: AckContext | None = None

    @property
    def key(self) -> MessageKey | None:
        h = self.header
        if h is None or not h.control_id:
            return None
        return (h.sending_application, h.sending_facility, h.control_id)


class HL7Ingest:
    """The HL7 use case. Thread-safe as long as one thread calls :meth:`handle_batch`."""

    def __init__(self, session_factory: sessionmaker[Session], tables: HL7Tables,
                 settings: Settings, *, bulk: bool = True) -> None:
        """``bulk=False`` applies every message on its own (the reference the bulk path is
        tested against)."""
        self._sessions = session_factory
        self._tables = tables
        self._settings = settings
        self._policy = OrderPolicy.from_settings(settings)
        self._counter = itertools.count()
        self._bulk = bulk
        bind = session_factory.kw.get("bind")
        self._writer = _HeldConnection(bind) if isinstance(bind, Engine) else None
        if self._writer is not None:
            # Returned to the pool when the ingest goes away (and at exit), not leaked.
            weakref.finalize(self, self._writer.close)

    def close(self) -> None:
        """Give the writer's connection back to the pool (it is taken again when needed)."""
        if self._writer is not None:
            self._writer.close()

    def _writer_session(self, held: bool) -> Session:
        if not held or self._writer is None:
            return self._sessions()
        return self._sessions(bind=self._writer.get())

    # -- batches ----------------------------------------------------------------------------
    def handle_batch(self, batch: list[Inbound]) -> list[Outcome]:
        """Decode and map outside the transaction, then apply the batch in one commit."""
        return self.handle_prepared([self.prepare(item) for item in batch])

    def handle_prepared(self, prepared: list[Prepared]) -> list[Outcome]:
        """Apply messages already decoded and mapped (:meth:`prepare`) in one commit.

        The listener prepares each message as it arrives, while the batch is still forming,
        so that work overlaps the wait for the other senders.

        The first attempt runs without savepoints (failures that get this far are rare:
        mapping errors are known before the transaction); if a message fails there, the
        batch is run again with a savepoint per message so only that message is rolled back.
        """
        # The held connection serves one batch at a time; a caller on a second thread
        # (not the bridge's own use) takes one from the pool instead.
        held = self._writer is not None and self._writer.lock.acquire(blocking=False)
        try:
            for isolated in (False, True):
                try:
                    with self._writer_session(held) as session, session.begin():
                        return self._handle_in(session, prepared, isolated=isolated)
                except _NeedsIsolation:
                    continue
        except SQLAlchemyError as exc:
            log.error("hl7 batch not stored: %s", type(exc).__name__, exc_info=True)
            if held:
                self.close()  # the next batch starts on a fresh connection
        finally:
            if held:
                assert self._writer is not None
                self._writer.lock.release()
        error = Transient("message could not be stored; resend later")
        return [self._unstored(p, error) for p in prepared]

    def handle_one(self, item: Inbound) -> Outcome:
        return self.handle_batch([item])[0]

    def prepare(self, item: Inbound) -> Prepared:
        """The pure part of handling a message: read the header, decode, map."""
        header = read_raw_header(item.raw)
        prepared = Prepared(item=item, header=header)
        try:
            charset = choose_charset(
                header.msh18 if header else "",
                header.sending_application if header else "",
                self._settings.hl7_sender_charsets,
                self._settings.hl7_default_charset,
            )
            prepared.charset = charset
            prepared.message = HL7Message(decode(item.raw, charset), charset)
            prepared.ack_context = AckContext.of(prepared.message)
            prepared.command = self.map_message(prepared.message)
        except BridgeError as exc:
            prepared.error = exc
        except Exception as exc:  # a mapping bug must not crash the listener: AE 207, logged
            log.exception("hl7 message could not be mapped")
            prepared.error = BridgeError(f"internal error: {type(exc).__name__}")
        return prepared

    def _handle_in(self, session: Session, prepared: list[Prepared], *,
                   isolated: bool) -> list[Outcome]:
        conn = session.connection()
        bulk = self._bulk and not isolated
        # PostgreSQL's held connection autocommits: BEGIN and COMMIT are sent here, in the
        # pipelines, so a batch costs two round trips instead of four.
        own_transaction = autocommits(conn)
        # One round trip (PostgreSQL) for the duplicate check and the look-ups of the
        # batch's first run; reading more than the run needs (duplicates) is harmless.
        reads = None
        with pipelined(conn):
            if own_transaction:
                send_control(conn, "BEGIN")
            stored_query = self._send_stored_acks(conn, [p.key for p in prepared if p.key])
            eligible = [p.command for p in prepared if self._eligible(p)] if bulk else []
            if eligible:
                first = batch_apply.BatchApplier(conn, self._policy)
                reads = (first, first.send_reads(eligible))  # type: ignore[arg-type]
        stored = self._read_stored_acks(conn, stored_query)
        # Which messages are new, and which repeat an earlier one (stored or in this batch).
        first_of: dict[MessageKey, int] = {}
        todo: list[int] = []
        for index, p in enumerate(prepared):
            key = p.key
            if key is not None and (key in stored or key in first_of):
                continue
            if key is not None:
                first_of[key] = index
            todo.append(index)
        applied, pending = self._apply_all(session, [prepared[i] for i in todo],
                                           isolated=isolated, preloaded=reads)
        results = dict(zip(todo, applied, strict=True))
        rows: list[dict[str, object]] = []
        outcomes: list[Outcome] = []
        processed_at = datetime.now(UTC)  # one moment for the batch: it commits as one
        for index, p in enumerate(prepared):
            key = p.key
            if index not in results:
                assert key is not None
                previous = stored.get(key) or results[first_of[key]][0]
                log.info("duplicate hl7 message answered with the stored ACK",
                         extra={"control_id": key[2], "sender": key[0]})
                outcomes.append(Outcome(previous.accept_ack, previous.app_ack, previous.status,
                                        previous.ack_code, previous.error,
                                        previous.error_location, duplicate=True,
                                        charset=previous.charset))
                continue
            outcome, accession = results[index]
            outcome.charset = p.charset or outcome.charset
            outcomes.append(outcome)
            rows.append(self._log_row(p, outcome, processed_at))
            if log.isEnabledFor(logging.INFO):
                log.info("hl7 message %s", outcome.status, extra={
                    "control_id": key[2] if key else None, "sender": key[0] if key else None,
                    "message_type": _type_of(p), "ack_code": outcome.ack_code,
                    # The error text can quote patient data: it stays in the message log.
                    "accession": accession, "error_location": outcome.error_location,
                })
        # The last run's writes, the log rows and the COMMIT share one round trip
        # (PostgreSQL). The session's own commit then has nothing left to do.
        with self._isolation_on_conflict(isolated), pipelined(conn):
            if pending is not None:
                pending.write()
            _INSERT_LOG.execute(conn, rows)
            if own_transaction:
                send_control(conn, "COMMIT")
        return outcomes

    @staticmethod
    @contextlib.contextmanager
    def _isolation_on_conflict(isolated: bool) -> Iterator[None]:
        """A unique key taken by another writer during a bulk run (a new patient's
        identifier, an order's placer number) rolls the batch back to be run again one
        message at a time, where each message gets its own answer."""
        try:
            yield
        except IntegrityError as exc:
            if isolated:
                raise
            raise _NeedsIsolation from exc

    @staticmethod
    def _eligible(p: Prepared) -> bool:
        return p.command is not None and batch_apply.eligible(p.command)

    def _apply_all(self, session: Session, todo: list[Prepared], *, isolated: bool,
                   preloaded: tuple[batch_apply.BatchApplier, batch_apply.Reads] | None
                   ) -> tuple[list[tuple[Outcome, str | None]], batch_apply.BatchApplier | None]:
        """Apply new messages in order: runs of common ones in bulk, the rest one by one.

        Returns the outcomes and, if the batch ends with a bulk run, its applier with the
        writes still to send (so that they share a round trip with the log rows).
        """
        if isolated or not self._bulk:
            return [self._apply(session, p, isolated=isolated) for p in todo], None
        results: list[tuple[Outcome, str | None]] = []
        index = 0
        pending = None
        while index < len(todo):
            run = []
            while index < len(todo) and self._eligible(todo[index]):
                run.append(todo[index])
                index += 1
            if run:
                # The look-ups sent with the duplicate check still hold for the first run:
                # nothing was written before it.
                fresh = preloaded if not results else None
                applier, answers = self._apply_run(session, run, fresh)
                results.extend(answers)
                if index == len(todo):
                    pending = applier
                else:
                    with self._isolation_on_conflict(False):
                        applier.write()
            if index < len(todo):
                results.append(self._apply(session, todo[index], isolated=False))
                index += 1
        return results, pending

    def _apply_run(self, session: Session, run: list[Prepared],
                   preloaded: tuple[batch_apply.BatchApplier, batch_apply.Reads] | None
                   ) -> tuple[batch_apply.BatchApplier, list[tuple[Outcome, str | None]]]:
        commands: list[batch_apply.Command] = [p.command for p in run]  # type: ignore[misc]
        if preloaded is None:
            applier = batch_apply.BatchApplier(session.connection(), self._policy)
            reads = applier.send_reads(commands)
        else:
            applier, reads = preloaded
        applier.load(reads)
        errors = applier.apply(commands)
        results = []
        for p, error in zip(run, errors, strict=True):
            if error is not None and not isinstance(error, BridgeError):
                raise _NeedsIsolation from error  # a bug: let the isolated path report it
            results.append((self._answer(p, error), _accession_of(p.command)))
        return applier, results

    def _apply(self, session: Session, p: Prepared, *,
               isolated: bool = True) -> tuple[Outcome, str | None]:
        error = p.error
        accession = None
        if error is None:
            assert p.command is not None
            if not isolated:
                try:
                    accession = self.apply_command(session, p.command)
                    return self._answer(p, None), accession
                except SQLAlchemyError:
                    raise
                except Exception as exc:
                    raise _NeedsIsolation from exc
            try:
                with session.begin_nested():
                    accession = self.apply_command(session, p.command)
            except BridgeError as exc:
                error = exc
            except SQLAlchemyError:
                raise  # the database itself failed: the whole batch is answered transient
            except Exception as exc:  # a bug must not crash the listener: AE 207, logged
                log.exception("hl7 message failed unexpectedly",
                              extra={"control_id": p.key[2] if p.key else None})
                error = BridgeError(f"internal error: {type(exc).__name__}")
        return self._answer(p, error), accession

    def map_message(self, msg: HL7Message) -> Command:
        """The pure part: what the message asks for (raises BridgeError kinds)."""
        tables, authority = self._tables, self._settings.hl7_primary_authority
        handler = to_domain.classify(msg, tables)
        if handler == "order":
            return to_domain.order_command(msg, tables, authority)
        if handler == "referral":
            return hl7_referrals.referral_command(msg, tables, authority)
        if handler == "result":
            return hl7_referrals.result_command(msg, tables)
        return to_domain.patient_command(msg, tables, handler, authority)

    def apply_command(self, session: Session, command: Command) -> str | None:
        """Apply a mapped message; returns its accession (for the logs) if any."""
        if isinstance(command, OrderCommand):
            apply_order_command(session, command, policy=self._policy)
            return command.order.accession
        if isinstance(command, ReferralCommand):
            apply_referral(session, command, self._policy)
            return None
        if isinstance(command, ResultCommand):
            apply_result(session, command, self._policy)
            return None
        patient_cmd = command
        if patient_cmd.kind == "upsert":
            patients.upsert_patient(session, patient_cmd.patient)
        elif patient_cmd.kind == "merge":
            assert patient_cmd.prior is not None
            patients.merge_patients(session, patient_cmd.patient, patient_cmd.prior)
        else:
            assert patient_cmd.prior is not None
            patients.change_identifier(session, patient_cmd.patient.primary, patient_cmd.prior)
        return None

    # -- answers ----------------------------------------------------------------------------
    def _answer(self, p: Prepared, error: BridgeError | None) -> Outcome:
        ctx = _context_of(p)
        code = "AA" if error is None else answer_for(error).hl7_ack
        status = "processed" if error is None else (
            "rejected" if isinstance(error, Rejected) else "error")
        accept_ack = app_ack = None
        if ctx.enhanced:
            accept = "CR" if isinstance(error, Rejected) else "CA"
            if wants_ack(ctx.accept_ack_type, accept):
                accept_ack = self._ack(ctx, accept, error if accept == "CR" else None)
            if accept == "CA" and wants_ack(ctx.application_ack_type, code):
                app_ack = self._ack(ctx, code, error, p.command)
        else:
            app_ack = self._ack(ctx, code, error, p.command)
        return Outcome(accept_ack, app_ack, status, code, error.message if error else None,
                       error.location if error else None)

    def _unstored(self, p: Prepared, error: BridgeError) -> Outcome:
        ctx = _context_of(p)
        code = "CE" if ctx.enhanced else "AR"
        return Outcome(None, self._ack(ctx, code, error), "unstored", code, error.message,
                       charset=p.charset or "utf-8")

    def _ack(self, ctx: AckContext, code: str, error: BridgeError | None,
             command: Command | None = None) -> str:
        stamp = f"{datetime.now(UTC):%Y%m%d%H%M%S}"
        control_id = f"{stamp}{next(self._counter) % 1_000_000:06d}"
        if isinstance(command, ReferralCommand):
            status, referral_id = command.answer or ("", None)
            rri_status = self._tables.referrals.get("rri_status", {}).get(status, "R")
            return hl7_referrals.build_rri(ctx, code, control_id=control_id, timestamp=stamp,
                                           rri_status=rri_status if error is None else "R",
                                           external_id=command.external_id,
                                           referral_id=referral_id, error=error)
        return build_ack(ctx, code, control_id=control_id, timestamp=stamp, error=error)

    # -- the log ----------------------------------------------------------------------------
    @staticmethod
    def _send_stored_acks(conn: Connection, keys: list[MessageKey]
                          ) -> list[tuple[str, str, object]]:
        """Look up stored answers for keys seen before, one query per sender (an index seek
        on (sender, facility, control_id)); read them with :meth:`_read_stored_acks`."""
        by_sender: dict[tuple[str, str], set[str]] = {}
        for app, facility, control_id in keys:
            by_sender.setdefault((app, facility), set()).add(control_id)
        sent = []
        for (app, facility), control_ids in by_sender.items():
            ids = sorted(control_ids)
            for start in range(0, len(ids), _IDS_PER_QUERY):
                sent.append((app, facility, _STORED_ACKS.send(
                    conn, app=app, fac=facility, ids=ids[start:start + _IDS_PER_QUERY])))
        return sent

    @staticmethod
    def _read_stored_acks(conn: Connection, sent: list[tuple[str, str, object]]
                          ) -> dict[MessageKey, Outcome]:
        found: dict[MessageKey, Outcome] = {}
        for app, facility, cursor in sent:
            for (control_id, accept_ack, ack, status, ack_code, error, error_location,
                 charset) in _STORED_ACKS.rows(conn, cursor):
                found[(app, facility, control_id)] = Outcome(
                    accept_ack, ack, status, ack_code or "", error, error_location,
                    charset=charset or "utf-8")
        return found

    def _log_row(self, p: Prepared, outcome: Outcome,
                 processed_at: datetime) -> dict[str, object]:
        h = p.header
        msg = p.message
        return {
            "received_at": p.item.received_at,
            "peer": p.item.peer[:128],
            "sending_application": h.sending_application if h else None,
            "sending_facility": h.sending_facility if h else None,
            "control_id": h.control_id if h and h.control_id else None,
            "message_type": _type_of(p),
            "version": msg.get("MSH-12.1") if msg else None,
            "charset": p.charset,
            "raw": p.item.raw,
            "text": msg.text if msg else None,
            "status": outcome.status,
            "accept_ack": outcome.accept_ack,
            "ack": outcome.app_ack,
            "ack_code": outcome.ack_code,
            "error": outcome.error,
            "error_location": outcome.error_location,
            "processed_at": processed_at,
            "attempts": 1,
        }

    # -- operator actions ------------------------------------------------------------------
    def reprocess(self, message_id: int) -> Outcome:
        """Run a failed or rejected message again (e.g. after fixing a mapping or charset)."""
        with self._sessions() as session, session.begin():
            row = session.get(LogRow, message_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no message {message_id}")
            if row.status not in ("error", "rejected"):
                raise Conflict(f"message {message_id} is {row.status}; only failed messages "
                               "are reprocessed")
            p = self.prepare(Inbound(raw=row.raw, peer=row.peer or ""))
            outcome, _ = self._apply(session, p)
            row.status, row.ack_code, row.error = outcome.status, outcome.ack_code, outcome.error
            row.error_location = outcome.error_location
            row.charset = p.charset
            row.text = p.message.text if p.message else row.text
            row.ack = outcome.app_ack or row.ack
            row.attempts += 1
            row.processed_at = datetime.now(UTC)
            outcome.message_id = row.id
        log.info("hl7 message reprocessed", extra={"message_id": message_id,
                                                    "ack_code": outcome.ack_code})
        return outcome


class _HeldConnection:
    """The batch writer's own connection, kept between batches.

    Batches come one after another from one thread; taking a connection from the pool for
    each cost as much as a statement (on PostgreSQL the pool's pre-ping is a round trip).
    A connection that failed is dropped and a new one taken.

    On PostgreSQL the connection autocommits and the batch sends its own BEGIN and COMMIT
    inside its pipelines (see ``HL7Ingest._handle_in``).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        #: Held by the batch using the connection.
        self.lock = threading.RLock()

    def get(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._conn = self._engine.connect()
            if conn.dialect.name == "postgresql":
                _own_postgresql_session(conn)
        return conn

    def close(self) -> None:
        with self.lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _own_postgresql_session(conn: Connection) -> None:
    """Set the writer's PostgreSQL session up: autocommit (the batch sends its own BEGIN and
    COMMIT in its pipelines) and generic plans.

    The engine makes every connection re-plan every statement (``force_custom_plan``, see
    ``bridge.store.db``), which suits ad-hoc queries; but the writer runs the same dozen
    statements for ever, and planning them cost PostgreSQL a third of its time per batch.
    Their generic plans seek by index even on an empty database (the look-ups are lateral
    joins on unique keys; ``tests/integration/test_writer_plans.py`` checks it). The
    connection leaves the pool, so this session's settings never reach another user.
    """
    conn.detach()
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    dbapi_conn.autocommit = True
    dbapi_conn.execute("SET plan_cache_mode = force_generic_plan")


def _accession_of(command: Command | None) -> str | None:
    return command.order.accession if isinstance(command, OrderCommand) else None


def _type_of(p: Prepared) -> str | None:
    if p.message is None:
        return None
    code, trigger = p.message.message_code, p.message.trigger
    return f"{code}^{trigger}" if trigger else code or None


def _context_of(p: Prepared) -> AckContext:
    if p.ack_context is not None:
        return p.ack_context
    return AckContext.of(p.message) if p.message is not None else _context_from(p.header)


def _context_from(header: RawHeader | None) -> AckContext:
    if header is None:
        return AckContext()
    return AckContext(sending_application=header.sending_application,
                      sending_facility=header.sending_facility, control_id=header.control_id)



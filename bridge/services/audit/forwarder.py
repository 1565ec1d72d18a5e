"""Forwarding the audit trail to an audit repository (IHE ATNA, RFC 5424 syslog).

The forwarder reads records after a durable watermark (``sync_state`` ``audit_forwarded``),
in ``seq`` order, sends them and then moves the watermark: nothing is written per audit
record to forward it, nothing is lost while the repository is down (the watermark waits),
and a record is sent again only if the bridge stops between sending and saving the mark.
"""

from __future__ import annotations

import logging
import socket

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.syslog import SyslogSender
from bridge.mapping.audit.fhir import syslog_line
from bridge.store.archive_models import AuditRecord
from bridge.store.audit import fields_of
from bridge.store.db import read_session
from bridge.store.fhir_models import SyncState

log = logging.getLogger("bridge.audit")
WATERMARK = "audit_forwarded"
BATCH = 500


class AuditForwarder:
    def __init__(self, sessions: sessionmaker[Session], sender: SyslogSender, *,
                 fhir_version: str = "R4") -> None:
        self.sessions = sessions
        self.sender = sender
        self.version = fhir_version
        self.hostname = socket.gethostname()

    def run_once(self) -> int:
        """Send what is new; returns how many records were sent."""
        sent = 0
        while True:
            with read_session(self.sessions) as session:
                mark = session.get(SyncState, WATERMARK)
                after = int(mark.value) if mark is not None and mark.value else 0
                rows = session.execute(select(AuditRecord).where(AuditRecord.seq > after)
                                       .order_by(AuditRecord.seq).limit(BATCH)).scalars().all()
                lines = [syslog_line(fields_of(row), self.hostname, self.version) for row in rows]
                last = rows[-1].seq if rows else after
            if not lines:
                return sent
            self.sender.send(lines)  # raises while the repository is unreachable
            with self.sessions.begin() as session:
                state = session.get(SyncState, WATERMARK)
                if state is None:
                    session.add(SyncState(name=WATERMARK, value=str(last)))
                else:
                    state.value = str(last)
            sent += len(lines)
            log.info("forwarded %d audit records up to seq %d", len(lines), last)

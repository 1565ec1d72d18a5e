"""What the MIS knows about an imported image's study: the order with its accession number,
else the patient with its ID. Used to fill the attributes the sidecar and file name left
empty, so a Secondary Capture carries the patient's real demographics from the start."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from sqlalchemy import Connection, Engine, func, select

from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep, table_of

ORD = table_of(Order)
P = table_of(Patient)
PI = table_of(PatientIdentifier)
STEP = table_of(ProcedureStep)
_SKIP_STATUSES = ("CANCELED", "DISCONTINUED")


class MisValues:
    """Look-ups cached for one import run (a folder holds many images of one study)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()

    def fill(self, values: Mapping[str, str]) -> dict[str, str]:
        """``values`` with the MIS's values added where it has none: by AccessionNumber
        (one open order), else by PatientID (one current patient)."""
        known: dict[str, str] = {}
        accession = values.get("AccessionNumber", "")
        if accession:
            known = self._cached(("accession", accession), self._by_accession)
        if not known and values.get("PatientID"):
            known = self._cached(("patient", values["PatientID"]), self._by_patient)
        filled = dict(values)
        for keyword, value in known.items():
            if value and not filled.get(keyword):
                filled[keyword] = value
        return filled

    def _cached(self, key: tuple[str, str], load: Callable[[str], dict[str, str]]
                ) -> dict[str, str]:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = load(key[1])
        with self._lock:
            self._cache[key] = found
        return dict(found)

    def _by_accession(self, accession: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            orders = conn.execute(
                select(ORD.c.id, ORD.c.patient_id, ORD.c.study_instance_uid,
                       ORD.c.referring_physician, ORD.c.procedure_description,
                       ORD.c.procedure_meaning)
                .where(ORD.c.accession == accession, ORD.c.status.not_in(_SKIP_STATUSES))
                .limit(2)).all()
            if len(orders) != 1:  # none, or ambiguous: fill nothing rather than guess
                return {}
            order = orders[0]
            modality = conn.execute(select(STEP.c.modality).where(
                STEP.c.order_id == order.id).order_by(STEP.c.id).limit(1)).scalar()
            values = self._patient(conn, int(order.patient_id))
        values.update({
            "AccessionNumber": accession,
            "StudyInstanceUID": order.study_instance_uid or "",
            "ReferringPhysicianName": order.referring_physician or "",
            "StudyDescription": (order.procedure_description or order.procedure_meaning
                                 or "")[:64],
            "Modality": modality or "",
        })
        return values

    def _by_patient(self, patient_id: str) -> dict[str, str]:
        current = func.coalesce(P.c.merged_into_id, P.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(current.label("pid")).distinct()
                                .join(P, P.c.id == PI.c.patient_id)
                                .where(PI.c.value == patient_id).limit(2)).all()
            if len(rows) != 1:
                return {}
            return self._patient(conn, int(rows[0].pid))

    @staticmethod
    def _patient(conn: Connection, patient_id: int) -> dict[str, str]:
        row = None
        for _ in range(32):  # follow a merge to the surviving patient
            row = conn.execute(select(P.c.id, P.c.merged_into_id, P.c.name, P.c.birth_date,
                                      P.c.sex).where(P.c.id == patient_id)).first()
            if row is None or row.merged_into_id is None:
                break
            patient_id = int(row.merged_into_id)
        if row is None or row.merged_into_id is not None:
            return {}
        ident = conn.execute(select(PI.c.value, PI.c.issuer).where(
            PI.c.patient_id == patient_id).order_by(PI.c.position).limit(1)).first()
        return {"PatientID": ident.value if ident else "",
                "IssuerOfPatientID": ident.issuer if ident else "",
                "PatientName": row.name or "", "PatientBirthDate": row.birth_date or "",
                "PatientSex": row.sex or ""}

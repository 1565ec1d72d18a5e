"""Keyed pseudonyms: the same input and the same destination secret give the same output,
and without the secret the output says nothing of the input (HMAC-SHA-256).

- UIDs become ``2.25.<decimal of 128 bits>`` (PS3.5 B.2, UUID-derived UIDs), so a study,
  its series and instances, and every reference to them inside sequences, map alike and
  resolve alike outside; pseudonym UIDs from two destinations differ.
- A patient (ID + issuer) becomes ``ANON<16 base-32 characters>``, used as Patient ID and
  Patient's Name; the date offset (whole days back, 1 to 3650) is keyed the same way, so
  every export of a patient to one destination shifts by the same days.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

UID_ROOT: Final = "2.25."
MAX_SHIFT_DAYS: Final = 3650


class Pseudonyms:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a pseudonym secret has at least 16 bytes")
        self._secret = secret
        self._uids: dict[str, str] = {}

    def _mac(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{purpose}\x00{value}".encode(),
                        hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        found = self._uids.get(uid)
        if found is None:
            number = int.from_bytes(self._mac("uid", uid.strip())[:16], "big")
            found = self._uids[uid] = f"{UID_ROOT}{number}"
        return found

    def patient(self, patient_id: str, issuer: str = "") -> str:
        digest = self._mac("patient", f"{issuer.strip()}|{patient_id.strip()}")
        return "ANON" + base64.b32encode(digest[:10]).decode("ascii")

    def shift_days(self, patient_id: str, issuer: str = "") -> int:
        digest = self._mac("shift", f"{issuer.strip()}|{patient_id.strip()}")
        return 1 + int.from_bytes(digest[:4], "big") % MAX_SHIFT_DAYS

    def accession(self, accession: str) -> str:
        return "A" + base64.b32encode(self._mac("accession", accession.strip())[:10]
                                      ).decode("ascii")[:15]

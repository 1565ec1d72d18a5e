"""The bridge's errors, grouped by how they are answered.

One error kind gives one answer per protocol: an HL7 acknowledgement code (with an ERR
segment code from HL7 table 0357), a DIMSE status and an HTTP status. Adapters translate
through :data:`ANSWERS`; ``tests/unit/test_errors.py`` checks that no kind is missing.
"""

from __future__ import annotations

from dataclasses import dataclass


class BridgeError(Exception):
    """Base of every error the bridge answers on purpose.

    ``location`` names the failing field the way the sender's protocol does (``PID-3``,
    ``ORC-1``, ``(0040,0100)``), and ``hl7_code`` is the HL7 table 0357 code for ERR-3.
    """

    hl7_code = "207"  # application internal error

    def __init__(self, message: str, *, location: str | None = None,
                 hl7_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        if hl7_code is not None:
            self.hl7_code = hl7_code


class Rejected(BridgeError):
    """The input is unacceptable as a whole (unsupported type, version, framing)."""

    hl7_code = "200"


class MappingFailed(BridgeError):
    """The content is wrong: a required field is missing or a code has no mapping."""

    hl7_code = "101"


class NotFound(BridgeError):
    """The input refers to something the bridge does not know."""

    hl7_code = "204"


class Conflict(BridgeError):
    """The input contradicts the stored state (duplicate key, illegal status transition)."""

    hl7_code = "205"


class Forbidden(BridgeError):
    """The caller is known but may not do this (a referral's requester accepting it)."""

    hl7_code = "207"


class Transient(BridgeError):
    """A passing fault on our side (database busy, peer down): the sender may retry."""

    hl7_code = "207"


@dataclass(frozen=True, slots=True)
class Answer:
    hl7_ack: str  # AA/AE/AR (original mode); enhanced mode derives CA/CE/CR from it
    dimse_status: int
    http_status: int


ANSWERS: dict[type[BridgeError], Answer] = {
    Rejected: Answer("AR", 0xA900, 400),
    MappingFailed: Answer("AE", 0xA900, 422),
    NotFound: Answer("AE", 0x0112, 404),
    Conflict: Answer("AE", 0x0110, 409),
    Forbidden: Answer("AR", 0x0124, 403),  # DIMSE 0124H: refused, not authorised
    Transient: Answer("AR", 0xA700, 503),
    BridgeError: Answer("AE", 0xC000, 500),
}


def answer_for(error: BaseException) -> Answer:
    """The answer for any exception; unknown ones are internal errors, never a crash."""
    for kind in type(error).__mro__:
        if kind in ANSWERS:
            return ANSWERS[kind]
    return Answer("AE", 0xC000, 500)

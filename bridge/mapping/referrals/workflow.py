"""The referral Task's state machine (FHIR Task, the IHE 360X closed-loop referral pattern).

requested → received → accepted | rejected → in-progress → completed | cancelled | failed.
A receiver may accept or reject straight from requested (FHIR's Task state machine allows
it; the registry's "use" of a referral is such an accept). Ended states are final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bridge.errors import Conflict, MappingFailed

REQUESTED, RECEIVED, ACCEPTED, REJECTED = "requested", "received", "accepted", "rejected"
IN_PROGRESS, COMPLETED, CANCELLED, FAILED = "in-progress", "completed", "cancelled", "failed"
STATUSES: Final = (REQUESTED, RECEIVED, ACCEPTED, REJECTED, IN_PROGRESS, COMPLETED,
                   CANCELLED, FAILED)
ENDED: Final = frozenset({REJECTED, COMPLETED, CANCELLED, FAILED})
#: While a referral is in one of these, its performer sees the studies it carries.
OPEN: Final = frozenset(set(STATUSES) - ENDED)

TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    REQUESTED: frozenset({RECEIVED, ACCEPTED, REJECTED, CANCELLED}),
    RECEIVED: frozenset({ACCEPTED, REJECTED, CANCELLED}),
    ACCEPTED: frozenset({IN_PROGRESS, COMPLETED, CANCELLED, FAILED}),
    IN_PROGRESS: frozenset({COMPLETED, CANCELLED, FAILED}),
    REJECTED: frozenset(), COMPLETED: frozenset(), CANCELLED: frozenset(), FAILED: frozenset(),
}

#: Which side may move a referral into each status: the requester (the family doctor who
#: referred), or the performer (diagnostics of the performing organization, the consultant).
#: Operators, admins and integration systems may make any legal move.
REQUESTER_MAY: Final = frozenset({CANCELLED})
PERFORMER_MAY: Final = frozenset({RECEIVED, ACCEPTED, REJECTED, IN_PROGRESS, COMPLETED,
                                  FAILED})
#: Who may perform a referral of each kind (a user role).
PERFORMER_ROLE: Final = {"diagnostics": "diagnostics", "consultant": "consultant"}
#: Who may refer.
REQUESTER_ROLES: Final = frozenset({"family_doctor", "consultant"})


@dataclass(frozen=True, slots=True)
class Move:
    """One asked-for transition."""

    current: str
    wanted: str


def check_move(current: str, wanted: str) -> Move:
    """The move, or :class:`Conflict` (409) naming both statuses when it is not allowed."""
    if wanted not in STATUSES:
        raise MappingFailed(f"unknown Task status {wanted!r}; expected one of "
                            f"{', '.join(STATUSES)}", location="Task.status")
    if wanted not in TRANSITIONS.get(current, frozenset()):
        raise Conflict(f"the Task is {current}; it cannot become {wanted}",
                       location="Task.status")
    return Move(current, wanted)


def side_may(side: str, wanted: str) -> bool:
    """Whether ``side`` (requester, performer, system) may move a referral into ``wanted``."""
    if side == "system":
        return True
    if side == "requester":
        return wanted in REQUESTER_MAY
    if side == "performer":
        return wanted in PERFORMER_MAY
    return False

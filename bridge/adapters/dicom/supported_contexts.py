"""Cheap per-association copies of the server's supported presentation contexts.

pynetdicom's acceptor deep-copies the server's supported contexts for every association
(``RequestHandler._create_association``: ``deepcopy(self.server.contexts)``). The bridge
supports about 180 SOP classes (storage with every transfer syntax, query/retrieve,
worklist, MPPS): about 7,700 UIDs, and deep-copying a pydicom ``UID`` re-creates and
re-validates it with a regular expression. That was 70-175 ms of CPU per association,
more than a whole worklist query, for modalities that associate once per query.

:class:`SharedUidContexts` is the same list whose deep copy shares the UIDs (immutable
``str`` values) and copies the rest: each context's attribute dict, with its lists
copied, so negotiation can still change a copy without touching the server's contexts.
If pynetdicom stops deep-copying, nothing changes but the saving.
"""

from __future__ import annotations

import copy
from typing import Any

from pynetdicom.presentation import PresentationContext

#: Attribute values a context may share with its copy (immutable).
_SHARED = (str, int, float, bool, type(None))


class SharedUidContexts(list[PresentationContext]):
    """A list of supported contexts whose :func:`copy.deepcopy` is cheap (see module).

    Which attributes are lists is worked out once, here: the server's contexts do not
    change once it has started."""

    def __init__(self, contexts: list[PresentationContext]) -> None:
        super().__init__(contexts)
        #: Per context: the names of its list attributes, or None when an attribute is
        #: neither immutable nor a list of immutable values (copied the general way).
        self._lists = [_list_attributes(context) for context in contexts]

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context, lists in zip(self, self._lists, strict=True):
            if lists is None:
                copies.append(copy.deepcopy(context, memo))
                continue
            clone = object.__new__(type(context))
            state = vars(clone)
            state.update(vars(context))
            for name in lists:
                state[name] = list(state[name])
            copies.append(clone)
        return copies


def _list_attributes(context: PresentationContext) -> tuple[str, ...] | None:
    lists = []
    for name, value in vars(context).items():
        if isinstance(value, list) and all(isinstance(item, _SHARED) for item in value):
            lists.append(name)
        elif not isinstance(value, _SHARED):
            return None
    return tuple(lists)


def share_uids(server: Any) -> None:
    """Make ``server`` (a pynetdicom association server) copy its contexts cheaply."""
    server.contexts = SharedUidContexts(list(server.contexts))

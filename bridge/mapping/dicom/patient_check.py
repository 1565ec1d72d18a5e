"""Do an object's own demographics contradict the MIS patient its PatientID names? Pure.

A study with no order is linked to an MIS patient on its PatientID alone, so the link is
made only when nothing the modality typed says it is someone else (the unscheduled case of
IHE Scheduled Workflow: emergency and portable exams, typed in a hurry):

- **birth date**: both known and different;
- **name**: the object's PatientName matches neither the MIS name nor its transliteration.
  Names are compared per component (family, given, middle), case, spaces and punctuation
  ignored (``O'Brien`` = ``OBRIEN``, ``Мʼясоїд`` = ``Мясоїд``); every component group of a
  PN counts (``SHEVCHENKO^TARAS==Шевченко^Тарас``); both sides are also compared in Latin
  letters by KMU 55 (Ukrainian) and ICAO (Russian), so ``Shevchenko^Taras`` typed on a
  console without Cyrillic matches ``Шевченко^Тарас``. The family name must match; the
  given and middle names must match where both sides have them (a modality often leaves out
  the patronymic, or types only an initial: an initial matches a name that starts with it).

An empty value contradicts nothing: the PatientID with its issuer is the identifier; the
checks only catch an exam typed for the wrong patient.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.mapping.dicom.reconciliation import PatientCheck
from bridge.mapping.translit import Language, transliterate_text

#: Both sides are also compared in Latin letters by these tables (mapping.translit).
_LANGUAGES: tuple[Language, ...] = ("uk", "ru")


@dataclass(frozen=True, slots=True)
class Demographics:
    name: str = ""
    birth_date: str = ""


def contradictions(mis: Demographics, source: Demographics,
                   checks: Iterable[PatientCheck]) -> tuple[PatientCheck, ...]:
    """The checks ``source`` (the object) fails against ``mis``, in the order given."""
    failed: list[PatientCheck] = []
    for check in checks:
        fails = (_dates_differ(mis.birth_date, source.birth_date) if check == "birth_date"
                 else not names_match(mis.name, source.name))
        if fails:
            failed.append(check)
    return tuple(failed)


def _dates_differ(mis: str, source: str) -> bool:
    mis, source = mis.strip(), source.strip()
    return bool(mis and source) and mis != source


def names_match(mis_name: str, source_name: str) -> bool:
    """Whether a DICOM PN the modality sent names the MIS patient (see the module doc)."""
    source_forms = _forms(source_name)
    if not source_forms:
        return True  # nothing typed: nothing contradicts
    mis_forms = _forms(mis_name)
    if not mis_forms:
        return True  # the MIS has no name to contradict
    return any(_same_person(m, s) for m in mis_forms for s in source_forms)


def _forms(name: str) -> list[tuple[str, ...]]:
    """Each component group of a PN as normalised (family, given, middle), also in Latin."""
    forms: list[tuple[str, ...]] = []
    for group in name.split("="):
        parts = group.split("^")[:3]
        if not any(p.strip() for p in parts):
            continue
        candidates = [tuple(_normalise(p) for p in parts)]
        for language in _LANGUAGES:
            candidates.append(tuple(_normalise(transliterate_text(p, language)) for p in parts))
        for candidate in candidates:
            if candidate not in forms and candidate and candidate[0]:
                forms.append(candidate)
    return forms


def _normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed
                   if c.isalnum() and not unicodedata.combining(c))


def _same_person(mis: tuple[str, ...], source: tuple[str, ...]) -> bool:
    if mis[0] != source[0]:
        return False
    for a, b in zip(mis[1:], source[1:], strict=False):
        if a and b and not _component_matches(a, b):
            return False
    return True


def _component_matches(mis: str, source: str) -> bool:
    """Equal, or one is the other's initial (``T`` for ``Taras``)."""
    if mis == source:
        return True
    shorter, longer = sorted((mis, source), key=len)
    return len(shorter) == 1 and longer.startswith(shorter)

"""Transliteration to Latin for peers that cannot show Cyrillic. Pure: no I/O.

Ukrainian uses the official system of the Cabinet of Ministers resolution 55 (2010),
``translitua.UkrainianKMU`` (Zghurskyi, Yizhakevych, Znamianka); Russian uses ICAO Doc 9303
(``RussianICAO``), as in passports. Person names are transliterated per PN component so
that the rules for a word's first letter (Є → Ye, Ї → Yi, Й → Y) apply to each name.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from translitua import RussianICAO, UkrainianKMU, translit

Language = Literal["uk", "ru"]

_TABLES: dict[str, Any] = {"uk": UkrainianKMU, "ru": RussianICAO}


def transliterate_text(text: str, language: Language) -> str:
    """Free text in Latin letters, guaranteed ASCII (see :func:`ascii_only`)."""
    if text.isascii():
        return text
    return ascii_only(translit(text, _TABLES[language]))


def transliterate_person_name(name: str, language: Language) -> str:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``, maybe with ``=`` groups) in Latin.

    Only one component group is kept: the ideographic and phonetic groups exist to carry
    non-Latin forms, which a Latin-only peer cannot take. The first group with a value is
    transliterated (a name stored as ``==Шевченко^Тарас`` still yields ``Shevchenko^Taras``).
    """
    if name.isascii() and "=" not in name:
        return name
    groups = name.split("=")
    group = next((g for g in groups if g.strip("^ ")), "")
    components = [transliterate_text(part, language) for part in group.split("^")]
    return "^".join(components)


def ascii_only(text: str) -> str:
    """Drop accents and replace what is left outside ASCII with ``?``.

    The last guard: a Latin-only peer must never receive bytes it would show as mojibake.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.encode("ascii", "replace").decode("ascii")

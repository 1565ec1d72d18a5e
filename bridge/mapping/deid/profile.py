"""The Basic Application Level Confidentiality Profile as a plan: which action each attribute
gets under a destination's options.

The table is ``mappings/deid/basic_profile.yaml`` (every row of PS3.15 Table E.1-1, the
edition named in its header) and ``mappings/deid/options.yaml`` (the option columns and
their CID 7050 codes). A row's action is its option's action (K keep, C clean) when one of
the destination's options names that row, keep winning over clean; otherwise its basic
action. The standard's combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) leave the choice by the
attribute's Type in the IOD; an object does not say its attributes' Types, so the plan takes
the choice that keeps every Type valid: a replacement UID where U is allowed, else a dummy
where D is allowed, else an empty value where Z is allowed; only a plain X removes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final

from bridge.mapping.tables import TableError, read_table

REMOVE: Final = "X"
EMPTY: Final = "Z"
DUMMY: Final = "D"
KEEP: Final = "K"
CLEAN: Final = "C"
NEW_UID: Final = "U"
ACTIONS: Final = frozenset({REMOVE, EMPTY, DUMMY, KEEP, CLEAN, NEW_UID})

_TAG = re.compile(r"^\(([0-9A-Fx]{4}),([0-9A-Fx]{4})\)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Row:
    """One row of Table E.1-1."""

    tag: str  # as the standard writes it: "(0010,0010)", "(50xx,xxxx)"
    name: str
    basic: str  # the Basic Profile column, combinations included ("X/Z/D")
    options: Mapping[str, str] = field(default_factory=dict)  # option name → K or C


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    column: str  # the standard's column name (innolitics' key, e.g. ``rtnUIDsOpt``)
    code: str
    meaning: str


@dataclass(frozen=True, slots=True)
class Profile:
    """The table and the options, as read from ``mappings/deid/``."""

    edition: str
    rows: tuple[Row, ...]
    options: Mapping[str, Option]
    profile_code: tuple[str, str]
    clean_pixel_code: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Plan:
    """Actions for one set of options: exact tags, then masked patterns (``50xx,xxxx``)."""

    options: frozenset[str]
    exact: Mapping[int, str]
    masked: tuple[tuple[int, int, str], ...]  # (value, mask, action)

    def action(self, tag: int) -> str | None:
        """The action for a tag, or None when the table does not list it (the attribute
        stays, its text swept for the patient's identity)."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        for value, mask, action in self.masked:
            if tag & mask == value:
                return action
        return None

    def retains(self, option: str) -> bool:
        return option in self.options


def resolve(basic: str) -> str:
    """One action from a combined basic code (see the module)."""
    parts = {part.strip().rstrip("*") for part in basic.split("/")}
    for choice in (NEW_UID, DUMMY, EMPTY, KEEP, CLEAN, REMOVE):
        if choice in parts:
            return choice
    raise TableError(f"basic_profile.yaml: unknown action {basic!r}")


def row_action(row: Row, options: Iterable[str]) -> str:
    chosen = [row.options[name] for name in options if name in row.options]
    if KEEP in chosen:
        return KEEP
    if CLEAN in chosen:
        return CLEAN
    return resolve(row.basic)


def make_plan(profile: Profile, options: Iterable[str]) -> Plan:
    chosen = frozenset(options)
    unknown = chosen - set(profile.options)
    if unknown:
        raise ValueError(f"unknown de-identification option(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(profile.options))}")
    if {"retain_full_dates", "retain_modified_dates"} <= chosen:
        raise ValueError("retain_full_dates and retain_modified_dates exclude each other")
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for row in profile.rows:
        value, mask = tag_pattern(row.tag)
        action = row_action(row, chosen)
        if mask == 0xFFFFFFFF:
            exact[value] = action
        else:
            masked.append((value, mask, action))
    return Plan(options=chosen, exact=exact, masked=tuple(masked))


def tag_pattern(tag: str) -> tuple[int, int]:
    """``(50xx,xxxx)`` → value and mask (x is any hex digit)."""
    match = _TAG.match(tag.strip())
    if match is None:
        raise TableError(f"basic_profile.yaml: not a tag: {tag!r}")
    digits = match.group(1) + match.group(2)
    value = int("".join("0" if c in "xX" else c for c in digits), 16)
    mask = int("".join("0" if c in "xX" else "F" for c in digits), 16)
    return value, mask


@cache
def load_profile(mappings_dir: Path) -> Profile:
    table = read_table(mappings_dir / "deid" / "basic_profile.yaml")
    opts = read_table(mappings_dir / "deid" / "options.yaml")
    options = {name: Option(name=name, column=str(o["column"]), code=str(o["code"]),
                            meaning=str(o["meaning"]))
               for name, o in (opts.get("options") or {}).items()}
    rows: list[Row] = []
    for entry in table.get("attributes") or []:
        if str(entry.get("tag", "")).upper().startswith("(GGGG"):
            continue  # private attributes: the transform's own rule (Retain Safe Private)
        row_options = {k: str(v) for k, v in entry.items() if k in options}
        for action in row_options.values():
            if action not in (KEEP, CLEAN):
                raise TableError(f"basic_profile.yaml: {entry.get('tag')}: option action "
                                 f"{action!r} (K or C)")
        rows.append(Row(tag=str(entry["tag"]), name=str(entry["name"]),
                        basic=str(entry["basic"]), options=row_options))
        resolve(rows[-1].basic)
        tag_pattern(rows[-1].tag)
    profile = opts["profile"]
    pixel = opts["clean_pixel_data"]
    return Profile(edition=str(table.get("edition", "")), rows=tuple(rows), options=options,
                   profile_code=(str(profile["code"]), str(profile["meaning"])),
                   clean_pixel_code=(str(pixel["code"]), str(pixel["meaning"])))

"""The lossless compression rules (``mappings/storage/compression.yaml``): which stored
objects are compressed, with which codec, at which moment. Pure: reading the YAML file is the
only I/O, done once at start; every rule is checked then, and a bad one is named.

The first rule whose ``modality`` and ``sop_class`` match an object decides for it. Its
``when`` says at which moment it is applied (``ingest``: once the study is stable;
``migration``: before the long-term copy), its ``min_age_days`` how long after the archive
received the object, and its ``codec`` what is produced (``none``: never compressed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from bridge.mapping.tables import TableError, read_table

When = Literal["ingest", "migration"]
WHENS: Final[tuple[When, ...]] = ("ingest", "migration")

#: Codec names of the rules file and the transfer syntax each produces.
CODEC_SYNTAXES: Final[Mapping[str, str]] = {
    "jpeg-ls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless Image Compression
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
}
NO_CODEC: Final = "none"
DEFAULT_CODEC: Final = "jpeg-ls"

_KEYS: Final = frozenset({"name", "modality", "sop_class", "codec", "when", "min_age_days"})
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MODALITY = re.compile(r"^[A-Z0-9_ ]{1,16}$")


class CompressionRuleError(TableError):
    """The rules file is malformed; the message names the file and the rule."""


@dataclass(frozen=True, slots=True)
class CompressionRule:
    name: str
    #: Upper-case modality codes; empty: any.
    modalities: frozenset[str] = frozenset()
    #: SOP Class UIDs; empty: any.
    sop_classes: frozenset[str] = frozenset()
    #: A key of :data:`CODEC_SYNTAXES`, or :data:`NO_CODEC`.
    codec: str = DEFAULT_CODEC
    when: When = "migration"
    min_age_days: float = 0.0

    def matches(self, modality: str, sop_class_uid: str) -> bool:
        if self.modalities and modality.strip().upper() not in self.modalities:
            return False
        return not self.sop_classes or sop_class_uid.strip() in self.sop_classes

    @property
    def transfer_syntax(self) -> str | None:
        """The UID this rule produces (None for ``codec: none``)."""
        return CODEC_SYNTAXES.get(self.codec)

    def due_at(self, received_at: datetime) -> datetime:
        """When an object received at ``received_at`` is old enough for this rule."""
        return received_at + timedelta(days=self.min_age_days)


@dataclass(frozen=True, slots=True)
class CompressionRules:
    rules: tuple[CompressionRule, ...] = ()

    def rule_for(self, modality: str, sop_class_uid: str) -> CompressionRule | None:
        """The first rule matching the object, or None (the object is never compressed)."""
        for rule in self.rules:
            if rule.matches(modality, sop_class_uid):
                return rule
        return None

    def applicable(self, modality: str, sop_class_uid: str, when: When
                   ) -> CompressionRule | None:
        """The rule to apply at ``when``: the object's rule when it compresses and belongs to
        this moment. At migration a due ``ingest`` rule applies too (the ingest job has not
        reached the object yet, and the long-term copy should be the compressed one)."""
        rule = self.rule_for(modality, sop_class_uid)
        if rule is None or rule.transfer_syntax is None:
            return None
        if when == "ingest" and rule.when != "ingest":
            return None
        return rule

    @property
    def has_ingest_rules(self) -> bool:
        return any(r.when == "ingest" and r.transfer_syntax for r in self.rules)


def load_compression_rules(path: Path) -> CompressionRules:
    """Read and check the rules file; :class:`CompressionRuleError` names what is wrong."""
    if not path.is_file():
        raise CompressionRuleError(f"{path}: no such compression rules file")
    try:
        data = read_table(path)
    except TableError as exc:
        raise CompressionRuleError(str(exc)) from None
    return parse_compression_rules(data, source=str(path))


def parse_compression_rules(data: Mapping[str, Any], *, source: str = "compression rules"
                            ) -> CompressionRules:
    unknown_top = set(data) - {"rules"}
    if unknown_top:
        raise CompressionRuleError(f"{source}: unknown keys {sorted(unknown_top)}; "
                                   "only `rules` is read")
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise CompressionRuleError(f"{source}: `rules` must be a list")
    rules: list[CompressionRule] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(raw, position, source)
        if rule.name in seen:
            raise CompressionRuleError(
                f"{source}: rule {rule.name!r} (#{position}): the name is used twice")
        seen.add(rule.name)
        rules.append(rule)
    return CompressionRules(tuple(rules))


def _parse_rule(raw: object, position: int, source: str) -> CompressionRule:
    if not isinstance(raw, dict):
        raise CompressionRuleError(f"{source}: rule #{position}: must be a mapping")
    name = raw.get("name")
    label = f"rule {name!r} (#{position})" if isinstance(name, str) and name else \
        f"rule #{position}"

    def fail(message: str) -> CompressionRuleError:
        return CompressionRuleError(f"{source}: {label}: {message}")

    if not isinstance(name, str) or not name.strip():
        raise fail("`name` is required (a non-empty text)")
    unknown = set(raw) - _KEYS
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}; use {sorted(_KEYS)}")
    modalities = _strings(raw.get("modality"), "modality", fail)
    bad = [m for m in modalities if not _MODALITY.match(m.upper())]
    if bad:
        raise fail(f"modality {bad} is not a DICOM modality code")
    sop_classes = _strings(raw.get("sop_class"), "sop_class", fail)
    bad = [uid for uid in sop_classes if len(uid) > 64 or not _UID.match(uid)]
    if bad:
        raise fail(f"sop_class {bad} is not a UID")
    codec = raw.get("codec", DEFAULT_CODEC)
    if codec not in (*CODEC_SYNTAXES, NO_CODEC):
        raise fail(f"codec {codec!r} is unknown; use one of "
                   f"{[*CODEC_SYNTAXES, NO_CODEC]}")
    when = raw.get("when")
    if when is None and codec != NO_CODEC:
        raise fail(f"`when` is required: one of {list(WHENS)}")
    if when is not None and when not in WHENS:
        raise fail(f"when {when!r} is unknown; use one of {list(WHENS)}")
    age = raw.get("min_age_days", 0)
    if isinstance(age, bool) or not isinstance(age, int | float) or age < 0:
        raise fail(f"min_age_days {age!r} must be a number of days, 0 or more")
    return CompressionRule(
        name=name.strip(), modalities=frozenset(m.upper() for m in modalities),
        sop_classes=frozenset(sop_classes), codec=str(codec),
        when=when or "migration", min_age_days=float(age))


def _strings(value: object, key: str, fail: Callable[[str], CompressionRuleError]
             ) -> list[str]:
    """One text or a list of texts (stripped); nothing: an empty list."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None or not all(isinstance(v, str) and v.strip() for v in items):
        raise fail(f"`{key}` must be a text or a list of non-empty texts")
    return [str(v).strip() for v in items]

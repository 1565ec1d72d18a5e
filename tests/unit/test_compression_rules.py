"""The compression rules table: first match wins, moments and ages, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config.settings import PROJECT_ROOT
from bridge.mapping.compression.rules import (
    CODEC_SYNTAXES,
    CompressionRuleError,
    load_compression_rules,
    parse_compression_rules,
)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
KEY_OBJECT = "1.2.840.10008.5.1.4.1.1.88.59"


def rules(*items: dict[str, Any]) -> Any:
    return parse_compression_rules({"rules": list(items)})


def test_the_shipped_rules_load_and_compress_imaging_at_migration_with_jpeg_ls() -> None:
    shipped = load_compression_rules(PROJECT_ROOT / "mappings" / "storage" / "compression.yaml")
    for modality in ("CT", "MR", "CR", "DX", "MG", "US", "XA", "NM", "PT"):
        rule = shipped.applicable(modality, CT_IMAGE, "migration")
        assert rule is not None and rule.codec == "jpeg-ls", modality
        assert rule.transfer_syntax == "1.2.840.10008.1.2.4.80"
        # Fresh studies stay as received online.
        assert shipped.applicable(modality, CT_IMAGE, "ingest") is None
    assert shipped.applicable("SM", "1.2.840.10008.5.1.4.1.1.77.1.6", "migration") is None
    assert shipped.applicable("SR", "1.2.840.10008.5.1.4.1.1.88.22", "migration") is None
    assert not shipped.has_ingest_rules


def test_first_matching_rule_wins_and_none_excludes() -> None:
    table = rules(
        {"name": "no-key-objects", "sop_class": KEY_OBJECT, "codec": "none"},
        {"name": "mg-j2k", "modality": "mg", "codec": "jpeg2000", "when": "ingest"},
        {"name": "rest", "when": "migration", "codec": "rle"},
    )
    assert table.rule_for("CT", KEY_OBJECT).name == "no-key-objects"  # type: ignore[union-attr]
    assert table.applicable("CT", KEY_OBJECT, "migration") is None
    mg = table.applicable(" MG ", CT_IMAGE, "ingest")
    assert mg is not None and mg.name == "mg-j2k" and mg.transfer_syntax == CODEC_SYNTAXES[
        "jpeg2000"]
    # At migration an ingest rule still applies (the long-term copy should be compressed).
    assert table.applicable("MG", CT_IMAGE, "migration") is mg
    rest = table.applicable("CT", CT_IMAGE, "migration")
    assert rest is not None and rest.codec == "rle"
    assert table.applicable("CT", CT_IMAGE, "ingest") is None
    assert table.has_ingest_rules


def test_modality_and_sop_class_lists_narrow_together() -> None:
    table = rules({"name": "ct-images", "modality": ["CT", "PT"], "sop_class": [CT_IMAGE],
                   "when": "ingest"})
    assert table.rule_for("PT", CT_IMAGE) is not None
    assert table.rule_for("PT", KEY_OBJECT) is None
    assert table.rule_for("MR", CT_IMAGE) is None
    assert table.rules[0].codec == "jpeg-ls"  # the default codec


def test_min_age_is_counted_from_reception() -> None:
    (rule,) = rules({"name": "old", "when": "ingest", "min_age_days": 1.5}).rules
    received = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    assert rule.due_at(received) == received + timedelta(hours=36)


@pytest.mark.parametrize(("rule", "message"), [
    ({"modality": "CT", "when": "ingest"}, "rule #1: `name` is required"),
    ({"name": "a", "when": "ingest", "codec": "jpeg"}, "rule 'a' (#1): codec 'jpeg' is unknown"),
    ({"name": "a", "codec": "rle"}, "rule 'a' (#1): `when` is required"),
    ({"name": "a", "when": "nightly"}, "rule 'a' (#1): when 'nightly' is unknown"),
    ({"name": "a", "when": "ingest", "min_age_days": -1}, "min_age_days -1 must be"),
    ({"name": "a", "when": "ingest", "min_age_days": "7"}, "min_age_days '7' must be"),
    ({"name": "a", "when": "ingest", "modality": "C-T"}, "modality ['C-T'] is not"),
    ({"name": "a", "when": "ingest", "modality": [False]}, "`modality` must be a text"),
    ({"name": "a", "when": "ingest", "sop_class": "1.2.x"}, "sop_class ['1.2.x'] is not a UID"),
    ({"name": "a", "when": "ingest", "modalities": "CT"}, "unknown keys ['modalities']"),
    ("just text", "rule #1: must be a mapping"),
])
def test_a_bad_rule_is_named_in_the_error(rule: Any, message: str) -> None:
    with pytest.raises(CompressionRuleError) as error:
        parse_compression_rules({"rules": [rule]})
    assert message in str(error.value)


def test_duplicate_names_and_a_bad_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CompressionRuleError, match=r"rule 'x' \(#2\): the name is used twice"):
        rules({"name": "x", "when": "ingest"}, {"name": "x", "when": "migration"})
    with pytest.raises(CompressionRuleError, match="unknown keys"):
        parse_compression_rules({"rule": []})
    path = tmp_path / "compression.yaml"
    path.write_text("rules: {name: x}\n", encoding="utf-8")
    with pytest.raises(CompressionRuleError, match="`rules` must be a list"):
        load_compression_rules(path)
    with pytest.raises(CompressionRuleError, match="no such compression rules file"):
        load_compression_rules(tmp_path / "missing.yaml")
    path.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(CompressionRuleError, match=str(path)):
        load_compression_rules(path)

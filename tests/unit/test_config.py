"""Settings: defaults, environment, TOML, and start-up refusals that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("BRIDGE_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert s.data_dir == Path("./var")
    assert s.database_url == "sqlite:///var/bridge.db"
    assert (s.bind, s.mllp_port, s.dicom_port, s.http_port) == ("127.0.0.1", 2575, 11112, 8080)
    assert s.ae_title == "BRIDGE"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_MLLP_PORT", "3000")
    monkeypatch.setenv("BRIDGE_HL7_SENDER_CHARSETS", '{"OLD_MIS": "windows-1251"}')
    s = load_settings()
    assert s.mllp_port == 3000
    assert s.hl7_sender_charsets == {"OLD_MIS": "windows-1251"}


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its ValidationError
        s.mllp_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("key", "value"), [
    ("BRIDGE_MLLP_PORT", "not-a-port"),
    ("BRIDGE_DICOM_PORT", "70000"),
    ("BRIDGE_AE_TITLE", "WAY_TOO_LONG_AE_TITLE"),
    ("BRIDGE_HL7_DEFAULT_CHARSET", "no-such-codec"),
    ("BRIDGE_LOG_LEVEL", "LOUD"),
])
def test_bad_values_name_the_key(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=key):
        load_settings()


def test_unknown_key_in_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('mllp_prot = 1\n', "utf-8")
    with pytest.raises(ConfigError, match="BRIDGE_MLLP_PROT"):
        load_settings(config)


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        'mllp_port = 2600\nae_title = "ARCHIVE"\n'
        '[hl7_sender_charsets]\nOLD_MIS = "cp1251"\n'
        '[[dicom_peers]]\nae_title = "CT1"\nhost = "10.0.0.5"\nport = 104\nlatin_only = true\n',
        "utf-8")
    s = load_settings(config)
    assert (s.mllp_port, s.ae_title) == (2600, "ARCHIVE")
    assert s.peer("CT1") is not None and s.peer("CT1").latin_only  # type: ignore[union-attr]
    monkeypatch.setenv("BRIDGE_MLLP_PORT", "2700")  # the environment wins over the file
    assert load_settings(config).mllp_port == 2700


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_settings(Path("/nonexistent/bridge.toml"))


def test_non_loopback_bind_needs_a_peer_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_BIND", "0.0.0.0")
    with pytest.raises(ConfigError, match=r"BRIDGE_BIND.*allow-list"):
        load_settings()
    monkeypatch.setenv("BRIDGE_DICOM_PEERS", '[{"ae_title": "CT1", "host": "10.0.0.5"}]')
    assert load_settings().bind == "0.0.0.0"


def test_the_example_environment_file_is_valid(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """bridge.env.example is what operators copy: every line must load."""
    from bridge.config.settings import PROJECT_ROOT

    lines = (PROJECT_ROOT / "bridge.env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert values
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert [p.ae_title for p in settings.dicom_peers] == ["CT_SCANNER_1", "US_ROOM_1", "PACS"]
    assert settings.forward_rules[0].destination == "PACS"

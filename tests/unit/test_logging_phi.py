"""Logging as the bridge configures it keeps third-party libraries' PHI out of the logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydicom.dataelem import DataElement

from bridge.app.logging_setup import configure_logging

_TOUCHED = ("", "pydicom", "pynetdicom", "uvicorn.access", "apscheduler")


@pytest.fixture
def bridge_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
             for name in _TOUCHED}
    configure_logging("INFO")  # after capsys: its handler writes to the captured stderr
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_pydicom_validation_warnings_quoting_values_stay_out_of_the_log(
        bridge_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    # A modality's non-conformant birth date, read when an object leaves the bridge:
    # pydicom logs the value itself at WARNING.
    DataElement(0x00100030, "DA", "1961-07-04")
    logging.getLogger("bridge.test").warning("a record that does get through")
    err = capsys.readouterr().err
    assert "a record that does get through" in err
    assert "1961-07-04" not in err


def test_exception_text_stays_out_of_logs_above_debug(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """An exception's message can quote patient data (a database refusing a row): above
    DEBUG only its type and frames are written."""
    import logging

    from bridge.app.logging_setup import configure_logging

    configure_logging("INFO")
    refused = "Key (value)=(Shevchenko Taras) already exists"  # as a database would say
    try:
        raise ValueError(refused)
    except ValueError:
        logging.getLogger("bridge.test").exception("store failed")
    written = capsys.readouterr().err
    assert "store failed" in written and "ValueError" in written
    assert "Shevchenko" not in written and "already exists" not in written
    configure_logging("DEBUG")
    try:
        raise ValueError("visible at DEBUG")
    except ValueError:
        logging.getLogger("bridge.test").exception("store failed")
    assert "visible at DEBUG" in capsys.readouterr().err
    configure_logging("INFO")

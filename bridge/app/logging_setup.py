"""JSON logs (python-json-logger). PHI (patient names, message text) only at DEBUG.

Log calls pass context in ``extra`` (control_id, accession, calling_ae, ...); the formatter
writes it as fields. Code never puts patient names into messages above DEBUG, and the
:class:`PHIFilter` drops any record that marks itself ``phi=True`` unless DEBUG is on.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

from pythonjsonlogger.json import JsonFormatter


class PHIFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "phi", False) or record.levelno <= logging.DEBUG


class _FramesOnlyJsonFormatter(JsonFormatter):
    """Above DEBUG, an exception is logged with its type and frames but not its text: a
    database's or a library's message can quote patient data (the row it refused, a value
    it could not parse)."""

    def formatException(self, ei: Any) -> str:
        exc_type, _exc, tb = ei
        frames = "".join(traceback.format_tb(tb))
        name = exc_type.__name__ if exc_type is not None else "Exception"
        return (f"Traceback (most recent call last):\n{frames}{name} "
                "(its message is logged at DEBUG only)")


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter if level == "DEBUG" else _FramesOnlyJsonFormatter
    handler.setFormatter(formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    ))
    handler.addFilter(PHIFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs whole datasets (names included) at INFO/DEBUG: keep it at WARNING
    # unless the operator asked for DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    # pydicom logs its value validation at WARNING with the value quoted ("Invalid value for
    # VR DA: '1961-07-04'"), e.g. when a stored object's birth date is read on egress.
    logging.getLogger("pydicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.ERROR)
    logging.getLogger("uvicorn.access").setLevel(
        max(logging.INFO, logging.getLevelName(level)))
    # APScheduler logs every run of every job at INFO (the archive sweep runs each second).
    logging.getLogger("apscheduler").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.WARNING)

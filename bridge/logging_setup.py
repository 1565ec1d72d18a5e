"""JSON logs (python-json-logger). PHI (patient names, message text) only at DEBUG.

Log calls pass context in ``extra`` (control_id, accession, calling_ae, ...); the formatter
writes it as fields. Code never puts patient names into messages above DEBUG, and the
:class:`PHIFilter` drops any record that marks itself ``phi=True`` unless DEBUG is on.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


class PHIFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "phi", False) or record.levelno <= logging.DEBUG


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
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
    logging.getLogger("uvicorn.access").setLevel(
        max(logging.INFO, logging.getLevelName(level)))
    # APScheduler logs every run of every job at INFO (the archive sweep runs each second).
    logging.getLogger("apscheduler").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.WARNING)

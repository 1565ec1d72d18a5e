"""One legacy import source: a folder a modality exports files into (settings model).

Kept apart from :mod:`bridge.config.settings` so the import module owns it;
``Settings.import_sources``
is a tuple of these, validated once at start like every other setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.config.checks import valid_crontab


class ImportSource(BaseModel):
    """A folder the bridge imports legacy modality files from.

    ``watch``: scanned every ``poll_seconds``; a file is imported once two scans in a row
    found it with the same size and modification time (a file still being copied changes).
    ``pull``: scanned at the times of ``schedule`` (crontab, ``local_timezone``), twice,
    ``settle_seconds`` apart, for the same reason.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Names the source in the processed-files list and the logs (letters, digits, ``_.-``).
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    path: Path
    mode: Literal["watch", "pull"] = "watch"
    poll_seconds: float = Field(default=30.0, gt=0)
    schedule: str = "*/15 * * * *"
    settle_seconds: float = Field(default=5.0, ge=0, le=600)
    #: Stands for the modality: its ``dicom_peers`` entry gives the charset of undeclared
    #: text, and the archive records it as the calling AE title (forwarding rules use it).
    calling_ae: str = Field(default="", max_length=16)
    #: ``mappings/import/<mapping>.yaml``: sidecar fields and file-name patterns.
    mapping: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]+$")
    #: Text the importer writes (Secondary Capture objects from images) in Latin letters.
    transliterate: bool = False

    @field_validator("calling_ae")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        if not value.isascii() or "\\" in value or value.strip() != value:
            raise ValueError("must be ASCII without backslash or surrounding spaces")
        return value

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        return valid_crontab(value)

    @model_validator(mode="after")
    def _absolute(self) -> ImportSource:
        if not self.path.is_absolute():
            raise ValueError("path must be absolute")
        return self


def check_unique_names(sources: tuple[ImportSource, ...]) -> tuple[ImportSource, ...]:
    names = [source.name for source in sources]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"source names must be unique: {duplicated}")
    return sources

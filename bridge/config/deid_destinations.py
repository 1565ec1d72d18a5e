"""Where de-identified studies go (``BRIDGE_DEID_DESTINATIONS``), with each destination's
options of the confidentiality profile, who may send there, and the rule that sends studies
there on its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The URL schemes a destination may have (see :attr:`DeidDestination.url`).
SCHEMES: Final = ("file", "s3", "dicom", "http", "https")
KNOWN_OPTIONS: Final = frozenset({
    "retain_safe_private", "retain_uids", "retain_device_identity",
    "retain_institution_identity", "retain_patient_characteristics", "retain_full_dates",
    "retain_modified_dates", "clean_descriptors", "clean_structured_content",
    "clean_graphics",
})


class DeidDestination(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    #: ``file:///outgoing/folder``, ``s3://bucket/prefix`` (BRIDGE_S3_ENDPOINT_URL),
    #: ``dicom://AE_TITLE`` (a DICOM peer of BRIDGE_DICOM_PEERS, by C-STORE; fetched back by
    #: C-GET) or ``http(s)://host/dicom-web`` (STOW-RS; fetched back by WADO-RS).
    url: str = Field(min_length=3)
    #: Options of PS3.15 Annex E (mappings/deid/options.yaml), e.g. ``retain_modified_dates``.
    options: tuple[str, ...] = ()
    #: Roles that may export here (admin always may).
    roles: tuple[str, ...] = ("operator",)
    #: Send every stable, reconciled study of these modalities here (empty: only on request).
    auto_modalities: tuple[str, ...] = ()
    #: The AE title objects come back from by C-STORE (default: the peer of a ``dicom://``).
    return_ae: str | None = Field(default=None, max_length=16)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in SCHEMES:
            raise ValueError(f"must start with one of {', '.join(s + '://' for s in SCHEMES)}")
        return value.rstrip("/") if scheme in ("http", "https") else value

    @field_validator("options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - KNOWN_OPTIONS
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(sorted(KNOWN_OPTIONS))}")
        if {"retain_full_dates", "retain_modified_dates"} <= set(value):
            raise ValueError("retain_full_dates and retain_modified_dates exclude each other")
        return tuple(sorted(set(value)))

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def peer_ae(self) -> str | None:
        return self.url.split("://", 1)[1].strip("/") if self.scheme == "dicom" else None

    @property
    def returns_from(self) -> str | None:
        return self.return_ae or self.peer_ae


def check_destinations(value: Sequence[DeidDestination]) -> tuple[DeidDestination, ...]:
    names = [d.name for d in value]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"destination names must be unique: {', '.join(duplicates)}")
    return tuple(value)

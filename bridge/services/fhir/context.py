"""What every FHIR use case needs: the settings, the ``mappings/fhir`` tables (read once),
the FHIR version, the modalities' time zone and the order policy."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from bridge.config.settings import Settings
from bridge.mapping.fhir.tables import FhirTables, load_fhir_tables
from bridge.services.worklist.orders import OrderPolicy

SR, PATIENT = "ServiceRequest", "Patient"
DOMAIN_TYPES = (PATIENT, SR)


@dataclass(frozen=True, slots=True)
class FhirContext:
    """What every FHIR use case needs, built once from the settings."""

    settings: Settings
    tables: FhirTables
    version: str
    zone: ZoneInfo
    policy: OrderPolicy

    @classmethod
    def from_settings(cls, settings: Settings) -> FhirContext:
        return cls(settings=settings, tables=fhir_tables(settings.mappings_dir),
                   version=settings.fhir_version, zone=ZoneInfo(settings.local_timezone),
                   policy=OrderPolicy.from_settings(settings))


@cache
def fhir_tables(mappings_dir: Path) -> FhirTables:
    """The FHIR tables of a mappings folder, read once per process."""
    return load_fhir_tables(mappings_dir)

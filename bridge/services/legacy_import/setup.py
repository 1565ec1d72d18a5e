"""Building an :class:`~.importer.Importer` from the settings (the CLI and the watches)."""

from __future__ import annotations

from bridge.config.import_sources import ImportSource
from bridge.config.settings import Settings
from bridge.mapping.legacy_import.metadata import load_import_mapping, with_patterns
from bridge.services.archive.store import ArchiveStore, _sqlite_writer_lock
from bridge.services.legacy_import.importer import Importer, ImportOptions
from bridge.services.legacy_import.mis_values import MisValues
from bridge.services.legacy_import.processed import ProcessedList

#: The source name of an ad-hoc ``bridge import`` without ``--source``.
CLI_SOURCE = "cli"


def build_importer(settings: Settings, store: ArchiveStore, *,
                   source: ImportSource | None = None, calling_ae: str | None = None,
                   mapping: str | None = None, patterns: list[str] | None = None,
                   transliterate: bool | None = None, dry_run: bool = False) -> Importer:
    """An importer for ``source`` (or an ad-hoc one); the keyword arguments override the
    source's settings. Raises :class:`~bridge.mapping.tables.TableError` for a bad table."""
    table = load_import_mapping(settings.mappings_dir,
                                mapping or (source.mapping if source else "default"))
    if patterns:
        table = with_patterns(table, patterns)
    options = ImportOptions(
        mapping=table, source=source.name if source else CLI_SOURCE,
        calling_ae=calling_ae if calling_ae is not None else (
            source.calling_ae if source else ""),
        transliterate=transliterate if transliterate is not None else (
            source.transliterate if source else False),
        language=settings.import_translit_language, dry_run=dry_run)
    writer = (_sqlite_writer_lock(str(store.engine.url)) if store.engine.dialect.name == "sqlite"
              else _NoLock())
    return Importer(store, ProcessedList(store.engine, writer), options,
                    uid_root=settings.uid_root, workers=settings.import_workers,
                    mis=MisValues(store.engine))


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

"""The migrations build exactly the schema the models declare, on both databases: a model
changed without a migration (or the other way round) fails here, not in production."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from bridge.store.models import Base

pytestmark = pytest.mark.integration

#: Made by a migration on purpose and not declared on the models: PostgreSQL's prefix index
#: for LIKE 'abc%' name searches (varchar_pattern_ops, migration 0002); SQLite needs none.
DIALECT_ONLY = {("remove_index", "ix_patients_name_search_pattern")}


def test_migrated_schema_equals_the_models(engine: Engine) -> None:
    import bridge.store.archive_models
    import bridge.store.fhir_models
    import bridge.store.import_models
    import bridge.store.storage_models  # noqa: F401 (every model module registers its tables)

    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    unexpected = [d for d in differences
                  if not (isinstance(d, tuple) and (d[0], getattr(d[1], "name", None))
                          in DIALECT_ONLY)]
    assert unexpected == []

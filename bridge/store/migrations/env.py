"""Alembic environment: the engine comes from ``config.attributes`` (see bridge.store.migrate)."""

from __future__ import annotations

from alembic import context

from bridge.store import (
    archive_models,  # noqa: F401  (registers the archive tables)
    deid_models,  # noqa: F401  (registers the de-identification key records)
    fhir_models,  # noqa: F401  (registers the FHIR tables)
    import_models,  # noqa: F401  (registers the legacy import list)
    people_models,  # noqa: F401  (registers the directory and logins)
    referral_models,  # noqa: F401  (registers referrals, reports and shares)
    storage_models,  # noqa: F401  (registers the storage tier tables)
)
from bridge.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

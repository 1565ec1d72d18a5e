"""The database: SQLAlchemy models per capability (:mod:`.models` for patients, orders, the
message log and tokens; :mod:`.archive_models`, :mod:`.fhir_models`, :mod:`.storage_models`,
:mod:`.import_models`, :mod:`.people_models`), the hash-chained audit trail (:mod:`.audit`),
engines and sessions (:mod:`.db`), raw statements for the hot paths (:mod:`.fast_sql`) and
Alembic migrations (:mod:`.migrate`). May import: the pure ``bridge.mapping`` (the audit
chain's rules) and nothing else of the bridge.
"""

"""The HTTP adapter: one FastAPI app (:mod:`.app`) with its dependencies (:mod:`.deps`: tokens,
sessions, the services), middleware and metrics, and one package per surface:
:mod:`.fhir` (``/fhir``), :mod:`.dicomweb` (``/dicomweb``: QIDO-RS, WADO-RS, STOW-RS) and
:mod:`.api` (``/api``, health and metrics). May import: services, storage, jobs, store,
mapping, config, errors; not the other adapters.
"""

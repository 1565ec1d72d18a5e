"""The admin API under ``/api`` (worklist, messages, reconciliation, storage, jobs, peers) and
the health and metrics endpoints, with their JSON schemas (:mod:`.schemas`). May import:
the HTTP adapter's own modules, services, storage, jobs, store, domain, errors.
"""

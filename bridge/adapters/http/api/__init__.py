"""The API under ``/api`` (worklist, messages, reconciliation, studies, storage, jobs, peers,
activity, viewer links, people, referrals and shares, de-identified exports) and the health
and metrics endpoints, with their JSON schemas (:mod:`.schemas`). May import:
the HTTP adapter's own modules, services, storage, jobs, store, domain, errors.
"""

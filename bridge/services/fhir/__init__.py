"""FHIR use cases: the shared context (:mod:`.context`), Patient and ServiceRequest reads and
writes (:mod:`.lookup`, :mod:`.views`, :mod:`.resources`), searches (:mod:`.queries`),
transaction Bundles (:mod:`.transactions`), ImagingStudy from the archive
(:mod:`.imaging`) and its publishing through the outbox (:mod:`.publish`), and the registry
pull (:mod:`.registry_sync`, scheduled by :mod:`.registry_poll`). May import:
services.patients, services.worklist, services.egress, clients.fhir, jobs, store,
mapping.fhir, errors, config.
"""

"""The FHIR REST API under ``/fhir`` (R4 or R5): reads, searches, writes, transaction and batch
Bundles, the CapabilityStatement, and ``$notify`` from the registry; every error is an
OperationOutcome (:mod:`.responses`). May import: the HTTP adapter's deps, services.fhir,
mapping.fhir, store, errors.
"""

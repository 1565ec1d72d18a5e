"""Pure mapping, no I/O: wire formats ↔ the domain, driven by the tables in ``mappings/``
(read once at start with :mod:`.tables`). One package per capability: :mod:`.hl7`,
:mod:`.fhir`, :mod:`.dicom`, :mod:`.worklist`, :mod:`.patients`, :mod:`.compression`,
:mod:`.legacy_import`, :mod:`.referrals` (the Task state machine, referral FHIR shapes,
subscriptions), :mod:`.audit` (the hash chain, AuditEvent, syslog lines); :mod:`.translit`
is shared. May import: domain, errors, config and
pure libraries (pydicom's data model, fhir.resources, PyYAML); never a database, a socket,
an event loop or an HTTP client (an import-linter contract).
"""

"""The audit trail's pure rules: how a record is written down canonically and chained to the
one before it (so an edited or removed record is detected), and the FHIR AuditEvent shape.
Imports only the standard library and ``bridge.domain``."""

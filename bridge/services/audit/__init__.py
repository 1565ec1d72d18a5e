"""The audit trail's use cases: FHIR AuditEvent views and search (:mod:`.events`), and the
forwarder that sends new records to an audit repository by syslog (:mod:`.forwarder`).
Writing and verifying the chain is :mod:`bridge.store.audit`. May import: clients, store,
mapping, config.
"""

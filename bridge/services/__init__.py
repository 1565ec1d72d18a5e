"""The use cases: the only place where mapping meets storage. One package per capability:
:mod:`.hl7` (intake, log), :mod:`.patients` (the MPI), :mod:`.worklist` (orders, MPPS,
worklist queries), :mod:`.archive` (store, query, reconcile, stability, forwarding, admin),
:mod:`.egress` (MIS values and transcoding on the way out), :mod:`.fhir` (the FHIR API's
use cases, ImagingStudy publishing, registry sync), :mod:`.compression`,
:mod:`.legacy_import`, :mod:`.auth` (tokens, users, logins, OIDC), :mod:`.referrals` (the
referral workflow, its notifications and the registry), :mod:`.access` (who sees which
study), :mod:`.audit` (AuditEvent, the syslog forwarder), and :mod:`.group_commit` (the two
batching helpers). May import: storage, clients, jobs, store, mapping, domain, errors, config;
never adapters, app or cli.
"""

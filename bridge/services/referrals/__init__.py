"""Electronic referrals: a family doctor refers a patient to diagnostics or a consultant; the
performer receives, accepts (a diagnostics referral becomes a worklist order), works and
returns a result; every move is an event, an audit record and a notification. Modules:
:mod:`.workflow` (create, move, results), :mod:`.views` (what a caller may see, FHIR shapes),
:mod:`.hooks` (studies and MPPS moving Tasks). May import: services.worklist,
services.patients, services.access, jobs, store, mapping, domain, errors, config.
"""

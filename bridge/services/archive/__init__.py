"""The image archive: taking in one received object (:mod:`.received` reads it,
:mod:`.store` keeps it), matching studies to orders or to known patients
(:mod:`.reconciliation`) and attaching orders that arrive after the images
(:mod:`.late_orders`), what operators see of it (:mod:`.reconciliation_view`,
:mod:`.metrics`), study stability and the periodic sweep (:mod:`.stability`, :mod:`.watch`),
searching the index (:mod:`.query`), forwarding to other archives (:mod:`.forwarding`) and
the operators' actions (:mod:`.admin`). May import: services.patients, services.worklist,
services.egress, services.group_commit, storage, jobs, store, mapping, errors, config.
"""

"""The master patient index: patients found by identifier (following merges), created,
updated, merged (A40) and re-identified (A47) (:mod:`.mpi`). May import: store,
mapping.patients, domain, errors.
"""

"""The durable job queue and its runners: jobs in the database with leases and retries
(:mod:`.queue`), the worker threads that claim and run them (:mod:`.worker`), and the
periodic scheduler (:mod:`.scheduler`). What the jobs *do* lives with its capability in
:mod:`bridge.services` and :mod:`bridge.storage`. May import: store, errors.
"""

"""Referrals' pure rules: the Task state machine and who may move it (:mod:`.workflow`), and
the FHIR shapes of referrals, their Tasks, results and the directory (:mod:`.fhir`).
Imports only the standard library, ``bridge.domain``, ``bridge.errors`` and ``bridge.mapping``.
"""
